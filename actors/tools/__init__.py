"""The tools agents call: URL fetching behind the SSRF guard, scraping, APIs, SQL, caching, breakers."""
