"""The shape memo of AuditEventValidator (api/formats/fhir_validation.py) accepts exactly
what fhir.resources accepts: over valid BALP messages mutated (values of the right JSON
type that a field refuses, wrong types, bad instants, unknown and missing elements, nulls
in lists, lists for objects, ...), an AuditEvent of a known shape is accepted only when the
library, validating it as posted, accepts it, and every answer is the library's."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from api.formats.fhir_audit import to_audit_event
from api.formats.fhir_validation import AuditEventValidator, Shapes, audit_event_problems
from api.workload import Workload
from tests import fhir_messages as m


def _rendered() -> list[dict[str, Any]]:
    """AuditEvents as the service renders them (every extension it writes), one per
    action of the workload."""
    out: dict[str, dict[str, Any]] = {}
    for e in Workload(seed=3).events(400):
        if e["action"] not in out:
            out[e["action"]] = {**to_audit_event(e, resource_id="r-1"), "id": e["event_id"]}
    return list(out.values())


def _odd() -> list[dict[str, Any]]:
    """Valid AuditEvents in forms the library takes and senders rarely send: an element
    as a string of its JSON (the library parses it), a primitive's extension beside
    its value, a primitive list with a null lined up with its extension."""
    as_string = m.read()
    as_string["type"] = orjson.dumps(as_string["type"]).decode()
    extended = m.read()
    extended["_action"] = {"extension": [{"url": "http://example.com/why",
                                          "valueString": "because"}]}
    lined_up = m.read()
    lined_up["meta"]["profile"] = [None, *lined_up["meta"]["profile"]]
    lined_up["meta"]["_profile"] = [{"id": "p0"}, None]
    return [as_string, extended, lined_up]


BASES = [*(make() for make, _ in m.PROFILES.values()), m.stu3_read(), *_rendered(), *_odd()]
BASES = [orjson.loads(orjson.dumps(b)) for b in BASES]  # as a request parses them
assert all(audit_event_problems(b) == [] for b in BASES)

# One memo for the whole run: every shape it learns is one the library accepted, so a
# later example of a learnt shape exercises the fast path.
SHAPES = Shapes()
for base in BASES:
    assert AuditEventValidator(SHAPES).problems(base) == []

# Strings a primitive field may or may not take: instants (partial, no zone, leap
# second, bad day), codes with doubled or edge spaces, ids too long or with other
# characters, empty and blank strings, URIs with spaces.
TRICKY = st.sampled_from([
    "", " ", "  x", "x ", "a  b", "a b", "TREAT", "0", "4", "13", "R", "E", "C", "rest",
    "2026-11-26", "2026-11", "2026", "2026-11-26T14:03:22", "2026-11-26T14:03:22Z",
    "2026-11-26T14:03:22.120-05:00", "2026-02-30T10:00:00Z", "2016-12-31T23:59:60Z",
    "2026-11-26T14:03:22+14:00", "2026-11-26T14:03:22+15:00", "2026-11-26T24:00:00Z",
    "2026-11-26T14:03Z", "26-11-26T14:03:22Z", "x" * 256, "a-b.c", "a_b", "Patient/1",
    "urn:oid:1.2.3", "http://x y", "http://example.com/x", "\t", "\n", "é", "true", "1",
    "{}", '{"code": "1"}', "[]",
])
# Strings most fields take (an id's characters, a code without spaces).
PLAUSIBLE = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,11}", fullmatch=True)
JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-3, 3),
                        st.integers(2**31 - 2, 2**31 + 1),
                        st.floats(allow_nan=False, allow_infinity=False), TRICKY,
                        st.text(max_size=8))
JSON = st.recursive(JSON_SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["code", "system", "value", "url", "valueString",
                                     "extension", "id", "text", "x"]), inner, max_size=3)),
    max_leaves=6)
KEYS = st.one_of(st.sampled_from([
    "code", "system", "display", "value", "reference", "identifier", "extension", "url",
    "valueString", "valueBoolean", "valueCode", "_code", "_recorded", "_value", "id",
    "resourceType", "resource_type", "fhir_comments", "requestor", "who", "type", "role",
    "modifierExtension", "contained", "period", "action__ext", "unknownElement",
]), st.text(min_size=1, max_size=6))


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    out = [(path, value)]
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_nodes(v, (*path, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_nodes(v, (*path, i)))
    return out


def _set(root: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = root
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return root


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    resource = copy.deepcopy(draw(st.sampled_from(BASES)))
    if draw(st.booleans()):
        # Values alone: the shape most often holds, so the fast path answers; a value
        # its field refuses must still be refused.
        strings = [p for p, v in _nodes(resource) if isinstance(v, str) and p]
        for path in draw(st.lists(st.sampled_from(strings), min_size=1, max_size=4)):
            resource = _set(resource, path, draw(st.one_of(PLAUSIBLE, TRICKY)))
        return resource
    for _ in range(draw(st.integers(1, 3))):
        nodes = _nodes(resource)
        path, node = draw(st.sampled_from(nodes[1:]))
        how = draw(st.sampled_from([
            "string", "string", "string", "value", "delete", "add", "rename", "list",
            "wrap", "copy",
        ]))
        if how == "string":  # the same JSON type: the shape holds, the value may be bad
            strings = [(p, v) for p, v in nodes if isinstance(v, str) and p]
            if strings:
                path, _ = draw(st.sampled_from(strings))
                resource = _set(resource, path, draw(st.one_of(TRICKY, st.text(max_size=12))))
        elif how == "value":  # any JSON where the node was
            resource = _set(resource, path, draw(JSON))
        elif how == "delete":  # an element left out (perhaps a required one)
            dicts = [(p, v) for p, v in nodes if isinstance(v, dict) and v]
            path, target = draw(st.sampled_from(dicts))
            del target[draw(st.sampled_from(sorted(target)))]
        elif how == "add":  # an element, known or not, where it may not belong
            dicts = [(p, v) for p, v in nodes if isinstance(v, dict)]
            path, target = draw(st.sampled_from(dicts))
            donor = draw(st.sampled_from(nodes))[1]
            target[draw(KEYS)] = copy.deepcopy(donor) if draw(st.booleans()) else draw(JSON)
        elif how == "rename":  # value[x] as another type, a primitive's _x, a name
            dicts = [(p, v) for p, v in nodes if isinstance(v, dict) and v]
            path, target = draw(st.sampled_from(dicts))
            key = draw(st.sampled_from(sorted(target)))
            new = draw(st.sampled_from([f"_{key}", f"{key}__ext", key.capitalize(),
                                        "valueCode", "valueBoolean", "valueInteger"]))
            target[new] = target.pop(key)
        elif how == "list":
            lists = [(p, v) for p, v in nodes if isinstance(v, list)]
            if lists:
                path, target = draw(st.sampled_from(lists))
                op = draw(st.sampled_from(["null", "dup", "pop", "empty"]))
                if op == "null":
                    target.insert(draw(st.integers(0, len(target))), None)
                elif op == "dup" and target:
                    target.append(copy.deepcopy(draw(st.sampled_from(target))))
                elif op == "pop" and target:
                    target.pop(draw(st.integers(0, len(target) - 1)))
                else:
                    target.clear()
        elif how == "wrap":  # an object where a list belongs, a list where an object does
            wrapped = node[0] if isinstance(node, list) and node else [node]
            resource = _set(resource, path, copy.deepcopy(wrapped))
        else:  # another element of the resource, of another type
            donor = draw(st.sampled_from(nodes))[1]
            resource = _set(resource, path, copy.deepcopy(donor))
    return resource


@settings(max_examples=1000)
@given(mutated(), st.sampled_from(BASES))
def test_the_fast_path_accepts_exactly_what_fhir_resources_accepts(
        resource: dict[str, Any], before: dict[str, Any]) -> None:
    # Another AuditEvent of the same request first: the elements the two share are
    # then known to the validator as well as their shapes.
    validator = AuditEventValidator(SHAPES)
    assert validator.problems(before) == []
    shape = validator.shape(resource)
    whole = audit_event_problems(resource, "Bundle.entry[0].resource")
    if shape is not None and SHAPES.knows(shape):
        event("fast path")
        # The soundness claim itself: a known shape is one the library accepts.
        assert whole == []
    else:
        event("library")
    assert validator.problems(resource, "Bundle.entry[0].resource") == whole
    # Asked again (the resource's shape perhaps learnt now): the same answer.
    assert AuditEventValidator(SHAPES).problems(resource, "Bundle.entry[0].resource") == whole


def _read() -> dict[str, Any]:
    return orjson.loads(orjson.dumps(m.read()))


def _with(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    resource = _read()
    change(resource)
    return resource


@pytest.mark.parametrize("value, accepted", [
    ("2026-11-27T09:15:00.5+01:00", True),
    ("2016-12-31T23:59:60Z", True),
    ("2026-11-27", False),  # an instant has a time
    ("2026-11-27T09:15:00", False),  # and a time zone
    ("2026-02-30T09:15:00Z", False),  # and a day of its month
])
def test_a_known_shape_is_accepted_by_its_values_alone_only_when_each_is_valid(
        value: str, accepted: bool) -> None:
    shapes = Shapes()
    AuditEventValidator(shapes).problems(_read())
    changed = _with(lambda r: r.update(recorded=value))
    validator = AuditEventValidator(shapes)
    shape = validator.shape(changed)
    # Refused by its field's own validator, the value gives no shape: the library decides.
    assert (shape is not None and shapes.knows(shape)) is accepted
    assert (validator.problems(changed) == []) is accepted
    assert validator.problems(changed) == audit_event_problems(changed)


@pytest.mark.parametrize("change", [
    lambda r: r["agent"][1]["who"]["identifier"].update(value="dr-someone-else"),
    lambda r: r.update(id="balp-other-id"),
    lambda r: r["entity"][0]["what"].update(reference="Patient/another"),
    lambda r: r["source"].update(site="Southside"),
])
def test_values_that_differ_reach_a_known_shape(change: Any) -> None:
    shapes = Shapes()
    assert AuditEventValidator(shapes).problems(_read()) == []
    assert len(shapes) == 1
    changed = _with(change)
    shape = AuditEventValidator(shapes).shape(changed)
    assert shape is not None and shapes.knows(shape)


@pytest.mark.parametrize("change", [
    lambda r: r["agent"][1].update(requestor="yes"),  # a string where a boolean was
    lambda r: r["agent"][1]["who"]["identifier"].update(value=7),
    lambda r: r["agent"][1]["who"].update(identifier=None),
    lambda r: r["agent"][1]["who"].update(secret="x"),  # an unknown element
    lambda r: r["agent"].append(None),
    lambda r: r["subtype"].append(copy.deepcopy(r["subtype"][0])),
    lambda r: r.pop("source"),  # a required element
    lambda r: r.update(resourceType="Patient"),
    lambda r: r["type"].update(code={"text": "x"}),
    lambda r: r.update(type=[r["type"]]),
])
def test_another_structure_is_another_shape(change: Any) -> None:
    shapes = Shapes()
    AuditEventValidator(shapes).problems(_read())
    changed = _with(change)
    shape = AuditEventValidator(shapes).shape(changed)
    assert shape is None or not shapes.knows(shape)
    assert AuditEventValidator(shapes).problems(changed) == audit_event_problems(changed)


def test_an_element_sent_as_a_string_is_in_its_shape_exactly() -> None:
    # The library parses a string where an element belongs as that element's JSON: one
    # such string valid says nothing of another.
    shapes = Shapes()
    good = _with(lambda r: r.update(type='{"code": "rest"}'))
    bad = _with(lambda r: r.update(type='{"code": "rest  operation"}'))
    assert AuditEventValidator(shapes).problems(good) == [] == audit_event_problems(good)
    assert AuditEventValidator(shapes).problems(bad) == audit_event_problems(bad) != []


def test_a_shape_holds_no_value() -> None:
    resource = _read()
    resource["agent"][1]["who"]["identifier"]["value"] = "MRN-SECRET-4711"
    resource["agent"][1]["who"]["secret-name"] = "MRN-SECRET-4711"  # unknown: exact
    shape = AuditEventValidator(Shapes()).shape(resource)
    assert shape is not None
    assert not any(isinstance(t, str) and "SECRET" in t for t in shape)
    assert b"SECRET" not in b"".join(t for t in shape if isinstance(t, bytes))


def test_the_memo_is_bounded() -> None:
    shapes = Shapes(limit=3)
    for i in range(5):
        resource = _read()
        resource["agent"] = resource["agent"][: i % 2 + 1]
        resource["subtype"] = resource["subtype"] * (i + 1)
        assert AuditEventValidator(shapes).problems(resource) == []
    assert 1 <= len(shapes) <= 3
