"""The rules of one event that only ``ledger.event`` states, each with its exact problem:
the record ``data`` (field names, scalar values, bounds), the position of an unknown
member (never its name, which may be PHI), and the size limit when the caller already
knows the encoded size. Pure: no database."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.canonical import MAX_SAFE_INTEGER
from ledger.event import (
    MAX_EVENT_BYTES,
    EventRejected,
    FieldProblems,
    check_event,
    validate_batch,
    validate_event,
)
from tests.support import make_event

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
