"""The tools agents call: URL fetching behind the SSRF guard, scraping, APIs, SQL, caching, breakers.

A module here declares a tool with ``actors.tools.catalogue.tool`` (its name, JSON Schema and
function); ``actors.tools.catalogue.discover_tools`` finds it, and it becomes a workflow and
``POST /tools/{name}`` with no other change.
"""
