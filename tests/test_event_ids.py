"""Event ids the service makes itself: valid event ids, UUIDv7, ordered by time."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from ledger.event import CANONICAL_UUID
from ledger.event_ids import new_event_id

MAX_MS = (1 << 48) - 1


def test_a_new_id_is_a_canonical_uuid_of_version_7() -> None:
    made = new_event_id()
    assert CANONICAL_UUID.match(made), "the event schema's own form"
    parsed = uuid.UUID(made)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == made


@given(st.integers(0, MAX_MS))
def test_the_first_48_bits_are_the_milliseconds_given(ms: int) -> None:
    made = uuid.UUID(new_event_id(ms))
    assert made.int >> 80 == ms
    assert made.version == 7 and made.variant == uuid.RFC_4122


@given(st.integers(0, MAX_MS - 1), st.integers(1, 1000))
def test_a_later_millisecond_sorts_after_as_the_database_compares_uuids(
    ms: int, later: int
) -> None:
    # PostgreSQL orders uuid values by their bytes: what keeps new ids at the index's edge.
    first, second = new_event_id(ms), new_event_id(min(MAX_MS, ms + later))
    assert uuid.UUID(first).bytes < uuid.UUID(second).bytes


def test_ids_made_in_one_millisecond_differ() -> None:
    made = {new_event_id(1_795_000_000_000) for _ in range(10_000)}
    assert len(made) == 10_000
