"""Events made alike (the service's records of a read, one per patient a page shows) are
validated once whole and then only where they differ -- and that must refuse exactly what
validating every event whole refuses, naming the same fields.

* for any template (valid, or with a bad field) and any patient ids (valid, empty, too
  long, not strings, missing), :func:`validate_alike` and :func:`validate_batch` accept
  the same lists and name the same fields (a bad field of the template once, at
  ``events[0]``, rather than in every event);
* a repeated event id and an oversized event are named too;
* ``Ingest.submit_alike`` records one event per patient, each the template with its own
  fresh event id and patient, and refuses a bad template or patient without writing.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.services import Services
from ledger.canonical import canonical
from ledger.entry import Entry
from ledger.event import MAX_EVENT_BYTES, EventRejected, validate_alike, validate_batch
from ledger.event_ids import new_event_id
from tests.support import accepted, make_event

LEDGER = "default"

TEMPLATES = [
    {k: v for k, v in make_event(action="query").items() if k not in ("event_id", "patient")},
    {k: v for k, v in make_event(action="query", purpose="NOPE").items()
     if k not in ("event_id", "patient")},
    {k: v for k, v in make_event(action="query", channel=None).items()
     if k not in ("event_id", "patient")},
    {k: v for k, v in make_event(action="query", occurred_at="yesterday").items()
     if k not in ("event_id", "patient")},
]

patient_ids = st.one_of(
    st.text(min_size=0, max_size=140), st.integers(), st.none(), st.just("x" * 129),
    st.just("MRN-0012345"),
)


def fields(check: Any, events: list[dict[str, Any]]) -> set[str] | None:
    try:
        check(events)
    except EventRejected as error:
        return set(error.fields)
    return None


def as_alike(named: set[str] | None) -> set[str] | None:
    """Fields a whole validation names, as :func:`validate_alike` names them: a field
    the events share (any but ``event_id`` and ``patient``) once, at ``events[0]``."""
    if named is None:
        return None
    out = set()
    for field in named:
        _, _, rest = field.partition("].")
        shared = rest and not rest.startswith(("patient", "event_id"))
        out.add(f"events[0].{rest}" if shared else field)
    return out


@given(template=st.sampled_from(TEMPLATES),
       ids=st.lists(patient_ids, min_size=1, max_size=8),
       missing=st.booleans())
def test_alike_refuses_what_a_whole_validation_refuses(
    template: dict[str, Any], ids: list[Any], missing: bool
) -> None:
    events = [{**template, "event_id": new_event_id(), "patient": {"id": patient_id}}
              for patient_id in ids]
    if missing:
        events[-1]["patient"] = None
    alike, whole = fields(validate_alike, events), fields(validate_batch, events)
    assert (alike is None) == (whole is None)
    # A whole validation of an event whose patient is bad stops before the rules between
    # fields; so the names agree where either the template or every patient is good (a
    # patient is good when the good template with it passes: ids have more rules than a
    # length, such as being one path segment without NUL).
    if template is TEMPLATES[0] or all(good_patient(e["patient"]) for e in events):
        assert alike == as_alike(whole)


def good_patient(patient: Any) -> bool:
    event = {**TEMPLATES[0], "event_id": new_event_id(), "patient": patient}
    return fields(validate_batch, [event]) is None


def test_a_repeated_event_id_and_an_oversized_event_are_named() -> None:
    first = make_event(action="query")
    again = {**first, "patient": {"id": "MRN-2"}}
    with pytest.raises(EventRejected) as refused:
        validate_alike([first, again])
    assert refused.value.fields == ["events[1].event_id"]

    events = [first, {**first, "event_id": new_event_id()}]
    with pytest.raises(EventRejected) as refused:
        validate_alike(events, [100, MAX_EVENT_BYTES + 1])
    assert refused.value.fields == ["events[1]"]
    assert validate_alike(events, [len(canonical(e)) for e in events]) is events


def test_submit_alike_records_one_event_per_patient(svc: Services) -> None:
    template = TEMPLATES[0]
    head = svc.store.head(LEDGER).seq
    outcome = accepted(
        svc.ingest.submit_alike(LEDGER, template, ["MRN-1", "MRN-2", "MRN-3"]).result())
    assert [r.seq for r in outcome.receipts] == [head + 1, head + 2, head + 3]
    stored = [Entry.decode(raw).event for raw in svc.store.read(LEDGER, head, 10)]
    posted = svc.protection.reveal_many(LEDGER, stored)
    assert [e["patient"]["id"] for e in posted] == ["MRN-1", "MRN-2", "MRN-3"]
    assert len({e["event_id"] for e in posted}) == 3
    for event in posted:
        assert {k: v for k, v in event.items() if k not in ("event_id", "patient")} == template

    for bad, named in (((template, ["MRN-4", ""]), "events[1].patient.id"),
                       ((TEMPLATES[1], ["MRN-4"]), "events[0].purpose")):
        with pytest.raises(EventRejected) as refused:
            svc.ingest.submit_alike(LEDGER, *bad)
        assert refused.value.fields == [named]
    assert svc.store.head(LEDGER).seq == head + 3
