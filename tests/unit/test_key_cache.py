"""An API key's lookup is reused for a few seconds per process; a revoked key stops working after them."""

from __future__ import annotations

from models.security import KeyIdentity
from web.auth import KeyCache


class Keys:
    """The database's answer for each key, and how often it was asked."""

    def __init__(self) -> None:
        self.known: dict[str, KeyIdentity] = {}
        self.lookups = 0

    def lookup(self, key: str) -> KeyIdentity | None:
        self.lookups += 1
        return self.known.get(key)


def test_a_key_is_looked_up_once_per_ttl_and_a_revocation_bites_after_it() -> None:
    now = [100.0]
    cache = KeyCache(5.0, clock=lambda: now[0])
    keys = Keys()
    keys.known["k1"] = KeyIdentity("id1", "acme", ["read"])
    for _ in range(10):
        assert cache.identify("k1", keys.lookup) == keys.known["k1"]
    assert keys.lookups == 1
    del keys.known["k1"]  # revoked
    now[0] += 4.9
    assert cache.identify("k1", keys.lookup) is not None  # still within the TTL
    now[0] += 0.2
    assert cache.identify("k1", keys.lookup) is None
    assert keys.lookups == 2


def test_unknown_keys_are_never_cached() -> None:
    cache = KeyCache(5.0, clock=lambda: 0.0)
    keys = Keys()
    for _ in range(3):
        assert cache.identify("made-up", keys.lookup) is None
    assert keys.lookups == 3


def test_zero_seconds_looks_up_every_time() -> None:
    cache = KeyCache(0.0)
    keys = Keys()
    keys.known["k"] = KeyIdentity("id", "t", ["read"])
    cache.identify("k", keys.lookup)
    cache.identify("k", keys.lookup)
    assert keys.lookups == 2
