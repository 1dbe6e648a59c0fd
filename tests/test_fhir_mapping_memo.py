"""The mapping of a Bundle's AuditEvents with one MappingMemo (what the request's
AuditEvents share read once) gives each AuditEvent exactly the event, or the refusal,
that mapping it alone gives."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.formats.fhir_audit import FormatRejected, MappingMemo, to_event
from tests import fhir_messages as m
from tests.test_fhir_skeleton import BASES, mutated


def _outcome(resource: Any, memo: MappingMemo | None, path: str = "AuditEvent") -> Any:
    try:
        return to_event(copy.deepcopy(resource), event_id="e", default_purpose="HOPERAT",
                        path=path, memo=memo)
    except FormatRejected as rejected:
        return rejected.problems


@settings(max_examples=300)
@given(st.lists(st.one_of(mutated(), st.sampled_from(BASES)), min_size=2, max_size=6))
def test_one_memo_over_a_request_maps_each_as_alone(resources: list[dict[str, Any]]) -> None:
    memo = MappingMemo()
    for i, resource in enumerate([*resources, *resources]):
        path = f"Bundle.entry[{i}].resource"
        assert _outcome(resource, memo, path) == _outcome(resource, None, path)


def test_an_agent_that_maps_with_problems_is_refused_at_each_of_its_places() -> None:
    bad = orjson.loads(orjson.dumps(m.read()))
    bad["agent"][1]["network"]["address"] = "not-an-address"  # type 2: an IP is required
    memo = MappingMemo()
    for i in range(2):
        with pytest.raises(FormatRejected) as refused:
            to_event(copy.deepcopy(bad), event_id="e", path=f"Bundle.entry[{i}].resource",
                     memo=memo)
        assert refused.value.problems == [
            (f"Bundle.entry[{i}].resource.agent[1].network.address",
             "must be an IP address when network.type is 2")]


def test_events_do_not_share_an_actor() -> None:
    memo = MappingMemo()
    actors = [to_event(m.read(), event_id=f"e{i}", memo=memo)["actor"] for i in range(3)]
    assert actors[0] == actors[1] == actors[2]
    assert len({id(actor) for actor in actors}) == 3
    actors[1]["id"] = "changed"
    assert to_event(m.read(), event_id="e3", memo=memo)["actor"]["id"] == "dr-rivera"
