"""Every entry renders as a valid R4 AuditEvent, whatever the contract let its event hold
(text with odd whitespace, offsets beyond FHIR's 14 hours, nanoseconds), and maps back to
the same event: one stored entry must never turn a read or an ITI-81 search into an
error for every auditor whose page reaches it. On SQLite and PostgreSQL for the routes."""

from __future__ import annotations

import re
from typing import Any

import orjson
from fastapi.testclient import TestClient
from fhir.resources.R4B.auditevent import AuditEvent
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from api.formats.fhir_audit import EXT, fhir_instant, to_audit_event, to_event
from api.formats.fhir_validation import rendered_is_valid
from ledger.event import check_event
from tests import fhir_messages as m
from tests.support import fastapi_app, make_event

FHIR = {"Content-Type": "application/fhir+json"}
# Text as a FHIR `code` or `string` may not hold it, and the contract may.
ODD_TEXT = st.one_of(
    st.text(st.sampled_from([" ", "\t", "\n", "\x0b", "\x1f", "\x85", "\u00a0",
                             "\u2028", "a", "Z", "/", "\u00e9"]), min_size=1, max_size=6),
    # Any text the ledger stores: no NUL, no lone surrogate (the contract refuses them).
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
            min_size=1, max_size=10),
)
OFFSETS = st.sampled_from(["Z", "+14:00", "-14:00", "+14:01", "-14:30", "+15:00",
                           "+23:59", "-23:59", "+05:30", "-00:00"])
FRACTIONS = st.sampled_from(["", ".1", ".120", ".123456", ".123456789"])
# Years below 1000 too: their UTC text must still have four digits.
YEARS = st.sampled_from(["0001", "0099", "0999", "1970", "2026", "9999"])
TIMES = st.builds(lambda year, day, f, o: f"{year}-11-{day:02d}T14:03:22{f}{o}",
                  YEARS, st.integers(1, 28), FRACTIONS, OFFSETS)


# Whitespace FHIR strings cannot hold (the renderer writes a space).
_NOT_FHIR = re.compile(r"[^\S \t\n\r]")


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


@settings(max_examples=150, deadline=None)
@example(resource_type=" Observation", role="r", name="n", occurred="2026-11-26T14:03:22+15:00",
         site="s", partner="p")
@example(resource_type="a  b", role="\x0b", name="\u2028", occurred="2026-11-26T00:00:00.5-23:59",
         site="\t", partner=" ")
@example(resource_type="t", role="r", name="n", occurred="0999-06-01T12:00:00+15:00", site="s",
         partner="p")
@given(resource_type=ODD_TEXT, role=ODD_TEXT, name=ODD_TEXT, occurred=TIMES, site=ODD_TEXT,
       partner=ODD_TEXT)
def test_every_contract_event_renders_valid_and_maps_back(
        resource_type: str, role: str, name: str, occurred: str, site: str,
        partner: str) -> None:
    base = make_event(occurred_at=occurred, source={"system": "desk", "site": site},
                      resource={"type": resource_type, "id": "r-1", "phi": ["name"]},
                      actor={"id": "a-1", "kind": "user", "role": role})
    disclosed = make_event(
        action="disclose", occurred_at=occurred,
        resource={"type": resource_type},
        disclosure={"recipient": {"name": name, "kind": "business_associate",
                                  "partner": partner},
                    "description": name})
    assume(check_event(base) == [])  # an offset can take year 1 or 9999 out of range
    for event in (base, disclosed):
        assert check_event(event) == [], "the strategy makes contract events"
        rendered = to_audit_event(event, resource_id="7")
        rendered_is_valid(rendered)  # raises when fhir.resources refuses it
        AuditEvent.model_validate(rendered)
        # Text FHIR holds as it is comes back as it was (blank text a sender writes
        # reads as absent, and whitespace FHIR cannot hold as a space: not compared).
        if all(text.strip() and not _NOT_FHIR.search(text)
               for text in (role, name, site, partner)) and not _NOT_FHIR.search(resource_type):
            assert to_event(rendered, event_id=event["event_id"]) == _without_nulls(event)


def test_an_instant_beyond_fhirs_offsets_renders_as_the_same_moment_in_utc() -> None:
    assert fhir_instant("2026-11-26T14:03:22.123456789+15:00") == "2026-11-25T23:03:22.123456789Z"
    assert fhir_instant("2026-11-26T14:03:22-23:59") == "2026-11-27T14:02:22Z"
    assert fhir_instant("0999-06-01T12:00:00+15:00") == "0999-05-31T21:00:00Z"
    # Within FHIR's range the text is kept as the application posted it.
    for kept in ("2026-11-26T14:03:22+14:00", "2026-11-26T14:03:22.5-14:00",
                 "2026-11-26T14:03:22Z", "2026-11-26T14:03:22-13:59"):
        assert fhir_instant(kept) == kept


def test_a_forged_occurred_at_extension_does_not_move_the_time() -> None:
    """The mapper takes our `occurred-at` extension only when it names the very moment
    `recorded` does: an AuditEvent cannot say one time and record another."""
    message = m.read()
    message["recorded"] = "2026-11-25T23:03:22Z"
    message.setdefault("extension", []).append({
        "url": EXT + "occurred-at", "valueString": "2026-11-26T14:03:22+15:00"})
    same = to_event(message, event_id="e", default_purpose="HOPERAT")
    assert same["occurred_at"] == "2026-11-26T14:03:22+15:00"
    message["extension"][-1]["valueString"] = "2026-11-26T14:03:23+15:00"
    assert to_event(message, event_id="e", default_purpose="HOPERAT")["occurred_at"] == \
        "2026-11-25T23:03:22Z"


def test_entries_fhir_cannot_hold_as_posted_are_read_and_searched(client: TestClient) -> None:
    odd = make_event(occurred_at="2026-11-26T14:03:22+15:00",
                     resource={"type": " Observation  x", "id": "o-1"})
    assert client.post("/v1/events", json=odd).status_code == 201
    message = m.read()
    message["entity"][1]["what"]["reference"] = " Encounter/enc-1 "
    assert client.post("/fhir/AuditEvent", content=orjson.dumps(message),
                       headers=FHIR).status_code == 201
    read = client.get("/fhir/AuditEvent/1", params={"purpose": "HOPERAT"})
    assert read.status_code == 200, read.text
    resource = read.json()
    AuditEvent.model_validate(resource)
    assert resource["recorded"] == "2026-11-25T23:03:22Z"
    second = client.get("/fhir/AuditEvent/2", params={"purpose": "HOPERAT"})
    assert second.status_code == 200, second.text
    # The reference's whitespace is not part of the type or the id it names.
    assert [(e["type"]["code"], e["what"]["identifier"]["value"])
            for e in second.json()["entity"] if e["type"]["code"] == "Encounter"] == [
        ("Encounter", "enc-1")]
    svc = fastapi_app(client.app).state.services
    head = client.get("/v1/ledger").json()["seq"]
    assert svc.projector.wait_for(svc.store.notification_of("default", head), 60)
    found = client.get("/fhir/AuditEvent", params={"purpose": "HOPERAT"})
    assert found.status_code == 200, found.text
    assert {e["resource"]["id"] for e in found.json()["entry"]} >= {"1", "2"}
