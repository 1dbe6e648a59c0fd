"""The rules that only ``ledger.event`` states, each with its exact problem (field path and
message): the record ``data`` (field names, scalar values, bounds), the field rules of its
own (event id, timestamp, address, path segment), the rules between fields, the position
of an unknown member (never its name, which may be PHI), text no backend can store, the
size limit (measured here or by the caller), and the rules of a batch and of events made
alike (``validate_alike``). Pure: no database."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.canonical import MAX_SAFE_INTEGER, canonical
from ledger.event import (
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    UNSTORABLE_TEXT,
    EventRejected,
    FieldProblems,
    check_event,
    member_label,
    validate_alike,
    validate_batch,
    validate_event,
)
from ledger.event_ids import new_event_id
from ledger.instant import check_instant
from tests.support import contract_example, make_event

NAMES = ("data", "field names must match [A-Za-z][A-Za-z0-9_.-]{0,63}")
SCALARS = "must be a string, a safe integer, a boolean, null or a list of those (no floats)"
TOO_LARGE = ("(event)", f"is larger than {MAX_EVENT_BYTES} bytes")


def _problems(data: Any) -> list[tuple[str, str]]:
    return check_event(make_event(action="create", data=data))


@pytest.mark.parametrize("data", [
    {"name": "Alice", "age": 42, "flag": True, "off": False, "none": None},
    {"most": MAX_SAFE_INTEGER, "least": -MAX_SAFE_INTEGER},
    {"text": "a" * 8192},
    {"list": [1] * 256, "mixed": ["a", 1, True, None]},
    {f"f{i}": i for i in range(256)},
])
def test_record_data_within_the_rules_is_accepted(data: dict[str, Any]) -> None:
    assert _problems(data) == []


@pytest.mark.parametrize(("data", "problems"), [
    ("Alice", [("data", "must be an object of field -> value")]),
    ({f"f{i}": i for i in range(257)}, [("data", "must hold at most 256 fields")]),
    # a bad name is named once and its value not judged; the fields after it still are
    ({"1st": 1.5, "ok": 1.5}, [NAMES, ("data.ok", SCALARS)]),
    ({"x": 1.5}, [("data.x", SCALARS)]),
    ({"x": MAX_SAFE_INTEGER + 1}, [("data.x", SCALARS)]),
    ({"x": "a" * 8193}, [("data.x", SCALARS)]),
    ({"x": {"nested": 1}}, [("data.x", SCALARS)]),
    ({"x": [1] * 257}, [("data.x", SCALARS)]),
    ({"x": ["a", 1.5]}, [("data.x", SCALARS)]),
    ({"x": [["a"]]}, [("data.x", SCALARS)]),
])
def test_record_data_outside_the_rules_names_each_problem(
    data: Any, problems: list[tuple[str, str]]
) -> None:
    assert _problems(data) == problems


def test_field_problems_read_as_one_message() -> None:
    error = FieldProblems([("data", "is bad"), ("data.x", "is worse")])
    assert (str(error), error.problems) == (
        "data is bad; data.x is worse", [("data", "is bad"), ("data.x", "is worse")])


def test_an_unknown_member_is_named_by_its_position_not_its_name() -> None:
    event = make_event()
    actor = {**event["actor"], "SSN 123-45-6789": 1}
    bad = {**event, "actor": actor, "zz": 1}
    assert check_event(bad) == [
        ("actor", f"unknown field (member {len(actor)})"),
        ("(event)", f"unknown field (member {len(bad)})"),
    ]


def test_the_size_the_caller_measured_is_the_size_judged() -> None:
    """The API passes the length of the body it read; a small event said to be larger
    than the limit is refused on that, alone or in a batch."""
    event = make_event()
    with pytest.raises(EventRejected) as refused:
        validate_event(event, size=MAX_EVENT_BYTES + 1)
    assert refused.value.problems == [TOO_LARGE]
    assert validate_event(event, size=MAX_EVENT_BYTES) is event
    with pytest.raises(EventRejected) as refused:
        validate_batch([make_event(), make_event()], sizes=[10, MAX_EVENT_BYTES + 1])
    assert refused.value.problems == [("events[1]", f"is larger than {MAX_EVENT_BYTES} bytes")]


def test_an_event_measured_here_is_judged_by_its_encoding() -> None:
    big = make_event(action="create", data={f"f{i}": "a" * 8192 for i in range(9)})
    assert TOO_LARGE in check_event(big)
    # one that cannot be encoded at all is refused for the field that holds the value,
    # never called too large (an integer beyond 2^63 was once "larger than 65536 bytes")
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    nested = check_event({**make_event(), "extra": deep})
    assert nested and TOO_LARGE not in nested
    for field, bad in (("actor.id", {"actor": {"id": 2**70, "kind": "user"}}),
                       ("source.system", {"source": {"system": "a\udc80b"}})):
        problems = check_event(make_event(**bad))
        assert {named for named, _ in problems} == {field}


UUID = "must be a UUID in canonical lower-case form"
IP = "must be an IPv4 or IPv6 address"
SEGMENT = "must not contain '/' nor be '.' or '..' (it is queried as a URL path segment)"
# pydantic's own message for an empty string, passed on as it is
EMPTY = "String should have at least 1 character"


def _refused(check: Any, *args: Any) -> list[tuple[str, str]]:
    with pytest.raises(EventRejected) as refused:
        check(*args)
    return refused.value.problems


def _actor(**fields: Any) -> dict[str, Any]:
    return {**make_event()["actor"], **fields}


@pytest.mark.parametrize(("overrides", "problems"), [
    ({"event_id": "not-a-uuid"}, [("event_id", UUID)]),
    ({"event_id": "0B4F8E0A-6C2D-4C1A-9E1B-2F8A7D3C5E10"}, [("event_id", UUID)]),
    # the reason is ledger.instant's, passed on without pydantic's "Value error, " prefix
    ({"occurred_at": "yesterday"}, [("occurred_at", check_instant("yesterday"))]),
    ({"actor": _actor(ip="198.51.100")}, [("actor.ip", IP)]),
    ({"actor": _actor(id="agent/42")}, [("actor.id", SEGMENT)]),
    ({"actor": _actor(id=".")}, [("actor.id", SEGMENT)]),
    ({"actor": _actor(id="..")}, [("actor.id", SEGMENT)]),
    ({"patient": {"id": "MRN/1"}}, [("patient.id", SEGMENT)]),
    # a list item is named by its index, after the path of its list
    ({"resource": {"type": "message", "phi": ["name", ""]}}, [("resource.phi[1]", EMPTY)]),
])
def test_each_field_rule_names_its_field_and_reason(
    overrides: dict[str, Any], problems: list[tuple[str, str]]
) -> None:
    assert check_event(make_event(**overrides)) == problems


@pytest.mark.parametrize("overrides", [
    {"actor": _actor(ip="2001:db8::7")},  # IPv6: tried after IPv4 fails
    {"actor": _actor(ip="::1")},
    {"actor": _actor(id="agent.42")},
    {"actor": _actor(id="...")},
    {"patient": {"id": "MRN.0012345"}},
])
def test_values_near_a_field_rule_are_accepted(overrides: dict[str, Any]) -> None:
    assert check_event(make_event(**overrides)) == []


def test_the_rules_between_fields_name_each_field() -> None:
    assert check_event({**contract_example(), "disclosure": None}) == [
        ("disclosure", "is required for action 'disclose'")]
    assert check_event(make_event(data={"a": 1})) == [
        ("data", "is not allowed with action 'read'")]
    assert check_event(make_event(action="update", data={"a": 1})) == []


def test_an_event_rejected_reads_as_one_message() -> None:
    error = EventRejected([("a", "is bad"), ("b", "is worse"), ("a", "again")])
    assert (str(error), error.fields) == ("a: is bad; b: is worse; a: again", ["a", "b"])


def test_every_problem_is_reported_not_only_the_first() -> None:
    """A ``data`` problem (carried through pydantic as one error) does not end the report:
    the fields validated after it are still named."""
    event = make_event(action="create", data={"x": 1.5}, source={"system": ""})
    assert check_event(event) == [("data.x", SCALARS), ("source.system", EMPTY)]


def test_a_data_key_json_cannot_hold_is_a_problem_not_a_crash() -> None:
    assert _problems({1: "x", "ok": 1}) == [NAMES]


def test_an_unknown_member_is_named_whatever_characters_its_name_holds() -> None:
    """A posted name may look like a path (``a[0]``): the member is still named by its own
    object and position, not taken for a part of the path."""
    event = make_event()
    actor = {**event["actor"], "a[0]": 1}
    bad = {**event, "actor": actor, "b[1]": 1}
    assert check_event(bad) == [
        ("actor", f"unknown field (member {len(actor)})"),
        ("(event)", f"unknown field (member {len(bad)})"),
    ]


def test_a_member_that_cannot_be_found_has_no_position() -> None:
    """The fallback of :func:`member_label`: a path that leads nowhere, or to no object holding
    the name, gives ``?`` rather than an error (the event is refused all the same)."""
    assert member_label({"a": {"b": 1}, "c": 2}, ("c",)) == "2"
    assert member_label({"a": {"b": 1}}, ("x", "b")) == "?"
    assert member_label({"a": [1]}, ("a", 0, "b")) == "?"
    assert member_label({"a": 1}, ("a", "b")) == "?"
    assert member_label({"a": {"b": 1}}, ("a", "c")) == "?"


def test_text_no_backend_can_store_is_named_by_its_field() -> None:
    assert check_event(make_event(actor=_actor(role="call\x00agent"))) == [
        ("actor.role", UNSTORABLE_TEXT)]
    assert check_event(make_event(
        resource={"type": "message", "phi": ["name", "pho\x00ne"]})) == [
        ("resource.phi[1]", UNSTORABLE_TEXT)]
    # A lone surrogate, which JSON encoders refuse rather than escape, is named the same
    # way (beside pydantic's own word on it), as is NUL beside text that reads like its
    # escape.
    assert ("actor.role", UNSTORABLE_TEXT) in check_event(
        make_event(actor=_actor(role="call\udc80agent")))
    assert check_event(make_event(actor=_actor(role="\\u0000 call\x00agent"))) == [
        ("actor.role", UNSTORABLE_TEXT)]
    assert check_event(make_event(actor=_actor(role="\\u0000 call agent"))) == []


def test_unstorable_text_under_a_refused_name_is_named_by_position() -> None:
    """The name of an unknown member is never repeated (it may be PHI): text no backend
    can store in its value, or in the name itself, is named by the member's position in
    its object; the members after it are still checked."""
    event = make_event(actor=_actor(role="call\x00agent"))
    bad = {"bad name": "a\x00b", **event, "bad\x00name": 1, "fine name": "fine"}
    n = len(bad)
    assert check_event(bad) == [
        ("(event)", "unknown field (member 1)"),
        ("(event)", f"unknown field (member {n - 1})"),
        ("(event)", f"unknown field (member {n})"),
        ("(event)", f"{UNSTORABLE_TEXT} (member 1)"),
        ("actor.role", UNSTORABLE_TEXT),
        ("(event)", f"{UNSTORABLE_TEXT} (member {n - 1})"),
    ]
    actor = _actor(**{"bad name": "a\x00b"})
    assert check_event(make_event(actor=actor)) == [
        ("actor", f"unknown field (member {len(actor)})"),
        ("actor", f"{UNSTORABLE_TEXT} (member {len(actor)})"),
    ]


def test_a_batch_names_each_problem_at_its_event() -> None:
    bad = make_event(action="create", data={"x": 1.5},
                     actor=_actor(zz=1, role="call\x00agent"))
    assert _refused(validate_batch, [5, bad]) == [
        ("events[0]", "must be a JSON object"),
        ("events[1].actor", f"unknown field (member {len(bad['actor'])})"),
        ("events[1].data.x", SCALARS),
        ("events[1].actor.role", UNSTORABLE_TEXT),
    ]
    assert check_event(5) == [("(event)", "must be a JSON object")]


def test_a_batch_names_each_repeated_event_id_and_its_first_use() -> None:
    first = make_event()
    events = [5, first, {**first}, make_event(), {**first}]
    assert _refused(validate_batch, events) == [
        ("events[0]", "must be a JSON object"),
        ("events[2].event_id", "repeats the event_id of events[1]"),
        ("events[4].event_id", "repeats the event_id of events[1]"),
    ]
    good = [first, make_event()]
    assert validate_batch(good) is good


@pytest.mark.parametrize("check", [validate_batch, validate_alike])
def test_the_size_of_a_batch_is_bounded(check: Any) -> None:
    events: Any
    for events in ("not a list", {"events": []}):
        assert _refused(check, events) == [("events", "must be a list of events")]
    assert _refused(check, []) == [("events", "must hold at least one event")]
    event = make_event()
    assert _refused(check, [event] * (MAX_BATCH_EVENTS + 1)) == [
        ("events", f"must hold at most {MAX_BATCH_EVENTS} events")]
    most = [{**event, "event_id": new_event_id()} for _ in range(MAX_BATCH_EVENTS)]
    assert check(most) is most


def test_alike_names_each_events_own_id_and_patient() -> None:
    first = make_event()
    repeated = new_event_id()
    events = [
        {**first, "patient": {"id": "MRN\x00-1"}},
        {**first, "event_id": "not-a-uuid"},
        {**first, "event_id": 5},
        {**first, "event_id": repeated},
        {**first, "event_id": repeated, "patient": {"id": "MRN-4", "ssn": "x"}},
        {**first, "event_id": new_event_id(), "patient": {"id": "MRN-5\x00"}},
    ]
    assert _refused(validate_alike, events) == [
        ("events[0].patient.id", UNSTORABLE_TEXT),
        ("events[1].event_id", UUID),
        ("events[2].event_id", UUID),
        ("events[4].event_id", "repeats an earlier event_id"),
        ("events[4].patient", "unknown field (member 2)"),
        ("events[5].patient.id", UNSTORABLE_TEXT),
    ]


def test_alike_judges_the_sizes_the_caller_measured() -> None:
    first = make_event()
    events = [first, {**first, "event_id": new_event_id()}]
    assert _refused(validate_alike, events, [MAX_EVENT_BYTES + 1, 10]) == [
        ("events[0]", f"is larger than {MAX_EVENT_BYTES} bytes")]
    assert validate_alike(events, [MAX_EVENT_BYTES, MAX_EVENT_BYTES]) is events


def _padded(patient: Any, size: int) -> dict[str, Any]:
    """A ``create`` event with ``patient`` whose encoding (with ``patient``) is ``size``
    bytes long, padded in its record data."""
    event = make_event(action="create", patient=patient, resource={"type": "note"},
                       data={f"f{i}": "a" * 8192 for i in range(7)} | {"pad": ""})
    event["data"]["pad"] = "a" * (size - len(canonical(event)))
    assert len(canonical(event)) == size
    return event


def test_alike_measures_each_event_by_its_own_size() -> None:
    """Without sizes from the caller, each event is measured whole, as in a batch: a long
    patient id may take an event past the limit that the fields it shares stay within."""
    first = _padded({"id": "p" * 128}, MAX_EVENT_BYTES + 1)
    events = [first, {**first, "event_id": new_event_id(), "patient": {"id": "q" * 128}}]
    too_large = [(f"events[{i}]", f"is larger than {MAX_EVENT_BYTES} bytes") for i in (0, 1)]
    assert _refused(validate_alike, events) == too_large
    assert _refused(validate_batch, events) == too_large


def test_alike_never_calls_an_event_it_cannot_measure_too_large() -> None:
    """An event whose own patient cannot be encoded (an integer beyond 2^64) is refused for
    that patient; what it shares is measured with the one-character stand-in patient, and
    at the limit is not too large -- as a whole validation says."""
    first = _padded({"id": "-"}, MAX_EVENT_BYTES)
    events = [{**first, "patient": {"id": 2**70}}]
    # pydantic's own message for a value of the wrong type, passed on as it is
    wrong_type = [("events[0].patient.id", "Input should be a valid string")]
    assert _refused(validate_alike, events) == wrong_type
    assert _refused(validate_batch, events) == wrong_type


class _Name(str):
    """A str subclass: what a Python caller's own string type might be."""


def test_a_value_no_field_rule_names_but_json_cannot_encode_is_refused() -> None:
    """Every field rule passes a ``data`` key of a str subclass, but the encoder takes only
    ``str`` itself as a key: the event cannot be hashed, so it is refused for that, at the
    event (not called too large, and never accepted)."""
    event = make_event(action="create", data={_Name("note"): 1})
    assert check_event(event) == [("(event)", "holds a value canonical JSON cannot encode")]
    assert _refused(validate_batch, [make_event(), event]) == [
        ("events[1]", "holds a value canonical JSON cannot encode")]
