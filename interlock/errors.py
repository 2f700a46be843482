"""The root of Interlock's exception tree, below every package so that all of them can share it.

Every error Interlock raises on purpose derives from :class:`InterlockError`: the actors' errors
(``actors.errors``), the web layer's (``web.signatures.InvalidSignature``), the command line's
(``interlock.client.ClientError`` and its subclasses) and the settings' own. Where callers rely on a built-in
class (``except ValueError`` around parsing), the error derives from that one too.
"""

from __future__ import annotations

__all__ = ["InterlockError", "SettingsError"]


class InterlockError(Exception):
    """Base of Interlock's own errors."""


class SettingsError(InterlockError, ValueError):
    """A configuration value could not be understood; the message names the variable."""
