"""AuditEventValidator: a Bundle's equal elements are validated by fhir.resources once,
and it answers exactly what validating each AuditEvent whole answers (accepted, or the
same problems at the same FHIRPaths)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from api.formats.fhir_validation import AuditEventValidator, audit_event_problems
from tests import fhir_messages as m


def _read() -> dict[str, Any]:
    return copy.deepcopy(m.read())  # the messages share module-level codings


def _variants() -> list[dict[str, Any]]:
    """Valid messages, then messages each wrong in one element that a valid message
    before it holds in a valid form."""
    out = [copy.deepcopy(make()) for make, _ in m.PROFILES.values()]
    bad_code = _read()
    bad_code["type"]["code"] = "rest  operation"  # a code has no double space
    deep = _read()
    deep["agent"][1]["who"]["identifier"]["period"] = {"start": "yesterday"}
    unknown = _read()
    unknown["source"]["type"][0]["secret-name"] = "x"
    # A Coding where a CodeableConcept belongs: the same JSON is valid as the type's
    # Coding of the messages before, not as a purposeOfEvent.
    wrong_type = _read()
    wrong_type["purposeOfEvent"] = [copy.deepcopy(wrong_type["type"])]
    null_item = _read()
    null_item["subtype"] = [None, *null_item["subtype"]]
    not_object = _read()
    not_object["agent"][1]["role"] = ["physician"]
    return [*out, bad_code, deep, unknown, wrong_type, null_item, not_object, *out]


def test_one_validator_over_many_answers_as_each_validated_whole() -> None:
    validator = AuditEventValidator()
    variants = _variants()
    answers = [validator.problems(r, f"Bundle.entry[{i}].resource")
               for i, r in enumerate(variants)]
    expected = [audit_event_problems(r, f"Bundle.entry[{i}].resource")
                for i, r in enumerate(variants)]
    assert answers == expected
    good = len(m.PROFILES)
    assert [bool(a) for a in answers] == [False] * good + [True] * 6 + [False] * good


@pytest.mark.parametrize("break_it", [
    lambda r: r["type"].update(code="rest  operation"),
    lambda r: r["agent"][1]["who"]["identifier"].update(use="official  use"),
    lambda r: r["purposeOfEvent"].append(copy.deepcopy(r["type"])),
    lambda r: r["entity"][0]["what"].update(reference=7),
])
def test_an_element_seen_valid_does_not_make_another_valid(break_it: Any) -> None:
    validator = AuditEventValidator()
    assert validator.problems(_read()) == []
    broken = _read()
    break_it(broken)
    assert validator.problems(broken) == audit_event_problems(broken) != []


def test_stu3_names_still_pass() -> None:
    validator = AuditEventValidator()
    assert validator.problems(m.stu3_read()) == [] == audit_event_problems(m.stu3_read())
