"""Views that read only some actions: entries read off as bytes, skipped undecoded.

A projector whose views all name the actions they read decodes only those entries
(``projections.view.action_of`` reads the action off the stored bytes). Skipping must
never drop an entry a view reads, and positions must still move over what was skipped.
"""

from __future__ import annotations

from typing import Any, get_args

from hypothesis import given
from hypothesis import strategies as st

from api.services import Services
from api.workload import Workload
from ledger.chain import EMPTY_HEAD, extend
from ledger.event import Action
from projections.accesses import AccessesView
from projections.disclosures import DisclosuresView
from projections.patients import PatientsView
from projections.runner import Projector, all_views
from projections.view import action_of, concerns, wanted_actions
from projections.workforce import WorkforceView
from tests.support import make_event
from tests.test_projection_model import assert_tables_equal, snapshot

ACTIONS = list(get_args(Action))
LEDGER = "default"


def _encoded(event: dict[str, Any]) -> bytes:
    return extend(EMPTY_HEAD, LEDGER, [event], "2026-11-27T00:00:00Z")[0].encode()


def test_the_action_of_every_workload_entry_is_read_off_its_bytes() -> None:
    events = list(Workload(seed=5).events(2000))
    entries = extend(EMPTY_HEAD, LEDGER, events, "2026-11-27T00:00:00Z")
    assert {action_of(e.encode()) for e in entries} == {e["action"] for e in events}
    assert all(action_of(e.encode()) == e.event["action"] for e in entries)


@given(st.sampled_from(ACTIONS), st.sampled_from(ACTIONS), st.text(max_size=20))
def test_a_look_alike_inside_the_event_does_not_mislead(
    action: str, decoy: str, text: str
) -> None:
    # A data field named "action", a description quoting an action: the real one is read.
    event = make_event(action=action, data={"action": decoy, "note": f'"action":"{decoy}"{text}'})
    assert action_of(_encoded(event)) == action


def test_bytes_not_shaped_like_an_entry_are_never_skipped() -> None:
    wanted = frozenset({"create"})
    assert action_of(b'{"hash":"00","event":{"action":"read"}}') is None
    assert concerns(b'{"hash":"00"}', wanted)
    assert concerns(b'{"event":{"action":"create"', wanted)
    assert not concerns(_encoded(make_event(action="read")), wanted)
    assert concerns(_encoded(make_event(action="read")), None)


def test_views_name_what_they_read() -> None:
    assert wanted_actions(all_views()) is None, "accesses reads every entry"
    assert wanted_actions([PatientsView(), DisclosuresView()]) == {
        "create", "update", "delete", "patient_shredded", "disclose"}
    assert AccessesView.actions is None
    assert "staff_added" in (WorkforceView.actions or ())


def test_a_projector_of_some_views_skips_the_rest_yet_moves_to_the_head(
    svc: Services,
) -> None:
    """Batches of five entries, most of them with nothing for these views (logins): the
    views end equal to a projection of every entry, at the head."""
    events = [make_event(action="login", patient=None, purpose=None, channel=None)
              for _ in range(23)]
    events += list(Workload(seed=9).events(300))
    events += [make_event(action="login", patient=None, purpose=None, channel=None)
               for _ in range(12)]
    svc.ingest.record_sync(LEDGER, events, batch=True)
    chosen = [PatientsView(), DisclosuresView()]
    some = Projector(svc.store, chosen, batch=5, processes=1)
    assert some.catch_up() == len(events)
    head = svc.store.last_notification()
    assert set(some.positions().values()) == {head}
    filtered = snapshot(svc.store)
    Projector(svc.store, processes=1).rebuild(["patients", "disclosures"])
    assert_tables_equal(snapshot(svc.store), filtered, "filtered catch-up vs rebuild")
    assert filtered["view_disclosures"], "the workload's disclosures are in"
