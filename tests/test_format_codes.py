"""api.formats.codes: the event id a standard message is known by is the UUIDv5 the
documentation names (NAMESPACE_URL, ``phi-ledger:<identity>:<key>``), however it is
computed: ids of messages already in ledgers must not change."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from api.formats.codes import derived_event_id


@given(st.text(), st.text())
def test_derived_event_id_is_the_uuid5_of_identity_and_key(identity: str, key: str) -> None:
    expected = str(uuid.uuid5(uuid.NAMESPACE_URL, f"phi-ledger:{identity}:{key}"))
    assert derived_event_id(identity, key) == expected


def test_a_known_id_stays() -> None:
    assert derived_event_id("app-1", "fhir:balp-read") == "1ec7b0a2-d3f1-5934-b8a1-29e60598ec57"
