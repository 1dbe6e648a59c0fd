"""Event ids for the events the service writes itself (reads recorded, keys, shreds).

UUIDv7 (RFC 9562): 48 bits of Unix time in milliseconds, then 74 random bits. Ids made
one after another sort one after another, so the ledger's ``event_id`` index takes each
new id at its right edge, in pages already in memory; a random (v4) id lands on a random
page of an index that outgrows memory with the ledger (measured at 10 million entries:
15 us of database time per id against 3). Applications may post any UUID; the ones that
post many are better served by v7 too (see README).
"""

from __future__ import annotations

import os
import time

_VERSION_7 = 0x7000  # in the time_hi_and_version field
_VARIANT_RFC = 0x8000  # in the clock_seq field


def new_event_id(unix_ms: int | None = None) -> str:
    """A fresh UUIDv7 in canonical lower-case form (the time is now unless given)."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    random = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 of them used
    rand_a = (random >> 68) & 0x0FFF
    rand_b = random & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | (_VERSION_7 | rand_a) << 64 | _VARIANT_RFC << 48
    value |= rand_b
    # Spelled out rather than str(uuid.UUID(int=...)): half the cost, and a user's page
    # of history records a read event per patient it shows.
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
