"""Interlock's shared base and its command.

``settings``, ``env_syntax``, ``limits``, ``logs`` and ``errors`` sit below every package (``models``,
``actors`` and ``web`` import them; they import none of those). ``interlock.cli``, the ``interlock``
command and its entry points, sits above every package; nothing imports it.
"""

__version__ = "0.1.0"
