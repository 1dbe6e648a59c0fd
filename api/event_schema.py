"""The Event as the OpenAPI document publishes it: the JSON Schema pydantic derives from
:class:`ledger.event.Event`, with what the ledger checks in code written in as far as JSON
Schema can say it: patterns (event_id, instants, path-segment ids, data field names, no
NUL), the IP address formats, the integer range, and the rules between fields as
``if``/``then`` (a PHI access needs patient, purpose and channel; ``disclosure`` only and
always with ``disclose``; ``data`` only with the actions that carry it), and the service's
own ``source.system`` refused.

Validation is not driven by this document: ``ledger.event.check_event`` decides (and says
why, naming every field). tests/test_openapi.py holds the two to agreement on generated
events, so the schema never refuses what ingest accepts nor accepts what a rule written
here refuses. What JSON Schema cannot say is in the descriptions: the calendar (no 30
February) and the years 1-9999 after converting to UTC, and the 64 KiB canonical size.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import TypeAdapter

from ledger.attestation import SERVICE_SYSTEM
from ledger.canonical import MAX_SAFE_INTEGER
from ledger.event import (
    DATA_ACTIONS,
    MAX_EVENT_BYTES,
    PHI_ACCESS_ACTIONS,
    Event,
)

REF = "#/components/schemas/{model}"

# No NUL anywhere (PostgreSQL text cannot hold it). Unpaired surrogates are refused too;
# JSON Schema has no way to name them, the description says so.
NO_NUL = "^[^\\u0000]*$"
UUID = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# RFC 3339 with an offset, as ledger.instant reads it: ASCII digits, every field in range,
# a day that exists in its month (29 February in leap years only), an offset below 24 h.
_YEAR = "([0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"
_LEAP_YEAR = "([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    f"({_YEAR}-((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)"
    f"|(0[13578]|1[02])-31)|{_LEAP_YEAR}-02-29)"
)
INSTANT = (
    f"^{_DATE}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{{1,9}})?"
    "(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
# A query's time bound: an instant, or a date (midnight UTC).
BOUND = f"^({_DATE}|{INSTANT[1:-1]})$"
# What str.strip() removes (Python's whitespace), spelled out: ECMA's \s differs.
_SPACE = ("[\\t-\\r\\u001c-\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029"
          "\\u202f\\u205f\\u3000]*")


def comma_list(names: frozenset[str] | tuple[str, ...]) -> str:
    """The pattern of a comma-separated choice among ``names`` as the routes read it
    (items stripped, empty items skipped, at least one item; an empty text is no filter)."""
    name = "(" + "|".join(sorted(names)) + ")"
    item = f"{_SPACE}{name}?{_SPACE}"
    return f"^(({item},)*{_SPACE}{name}{_SPACE}(,{item})*)?$"


INSTANT_DOC = (
    "RFC 3339 with an offset (`Z` or `+HH:MM`), up to nanoseconds, of a day that exists. "
    "Also refused, beyond what the pattern says: a moment outside the years 1-9999 once "
    "converted to UTC (`9999-12-31T23:59:59-23:59`)."
)
# Queried as one URL path segment: no '/', and neither '.' nor '..'.
SEGMENT = "^[^/\\u0000]+$"
FIELD_NAME = "^[A-Za-z][A-Za-z0-9_.-]{0,63}$"

SCALAR: list[dict[str, Any]] = [
    {"type": "string", "maxLength": 8192, "pattern": NO_NUL},
    {"type": "integer", "minimum": -MAX_SAFE_INTEGER, "maximum": MAX_SAFE_INTEGER},
    {"type": "boolean"},
    {"type": "null"},
]
DATA: dict[str, Any] = {
    "description": "Field -> value of the record created or updated (actions "
    + ", ".join(f"`{a}`" for a in sorted(DATA_ACTIONS)) + " only): strings, safe integers "
    "(|n| <= 2^53-1), booleans, null or lists of those. No floats: an integer is written "
    "without a fraction or exponent (`2`, not `2.0`), which JSON Schema cannot say (its "
    "`integer` admits `2.0`); the ledger hashes numbers as written, so it refuses any "
    "number that is not an integer literal (422 naming the field).",
    "anyOf": [
        {"type": "object", "maxProperties": 256, "propertyNames": {"pattern": FIELD_NAME},
         "additionalProperties": {"anyOf": [
             *SCALAR, {"type": "array", "maxItems": 256, "items": {"anyOf": SCALAR}}]}},
        {"type": "null"},
    ],
}


def _not_null(*names: str) -> dict[str, Any]:
    return {"required": list(names),
            "properties": {name: {"not": {"type": "null"}} for name in names}}


def _absent_or_null(name: str) -> dict[str, Any]:
    return {"properties": {name: {"type": "null"}}}


def _action_in(actions: frozenset[str] | set[str]) -> dict[str, Any]:
    return {"required": ["action"], "properties": {"action": {"enum": sorted(actions)}}}


def _action_not_in(actions: frozenset[str] | set[str]) -> dict[str, Any]:
    return {"required": ["action"],
            "properties": {"action": {"not": {"enum": sorted(actions)}}}}


CROSS_FIELD_RULES: list[dict[str, Any]] = [
    {"if": _action_in(PHI_ACCESS_ACTIONS), "then": _not_null("patient", "purpose", "channel")},
    {"if": _action_in({"disclose"}), "then": _not_null("disclosure")},
    {"if": _action_not_in({"disclose"}), "then": _absent_or_null("disclosure")},
    {"if": _action_not_in(DATA_ACTIONS), "then": _absent_or_null("data")},
]


def _strings(schema: Any) -> None:
    """Every string schema below ``schema`` without a pattern gets :data:`NO_NUL`."""
    if isinstance(schema, dict):
        if schema.get("type") == "string" and "pattern" not in schema and "enum" not in schema:
            schema["pattern"] = NO_NUL
        for value in schema.values():
            _strings(value)
    elif isinstance(schema, list):
        for item in schema:
            _strings(item)


def event_schemas() -> dict[str, dict[str, Any]]:
    """The Event schema and the schemas it refers to, by component name."""
    schema = copy.deepcopy(TypeAdapter(Event).json_schema(ref_template=REF))
    components: dict[str, dict[str, Any]] = schema.pop("$defs", {})
    event = schema
    props = event["properties"]
    props["event_id"].update(pattern=UUID, description="A UUID in canonical lower-case "
                             "form; the idempotency key (a replay with the same body is a 200).")
    props["occurred_at"].update(pattern=INSTANT, description=INSTANT_DOC)
    props["data"] = DATA
    event["allOf"] = CROSS_FIELD_RULES
    event["description"] = (
        "One access event (docs/contract.md). At most "
        f"{MAX_EVENT_BYTES // 1024} KiB in canonical JSON. No string may hold NUL or an "
        "unpaired surrogate. The rules between fields are the `allOf` below; the service "
        "answers 422 naming every field that breaks any rule."
    )
    for name in ("Actor", "Patient"):
        identifier = components[name]["properties"]["id"]
        identifier.update(pattern=SEGMENT, **{"not": {"enum": [".", ".."]}},
                          description="Queried as one URL path segment: no `/`, and "
                          "neither `.` nor `..`.")
    ip = components["Actor"]["properties"]["ip"]
    ip["anyOf"] = [{"type": "string", "maxLength": 64, "anyOf": [
        {"format": "ipv4"}, {"format": "ipv6"}]}, {"type": "null"}]
    system = components["Source"]["properties"]["system"]
    system["not"] = {"const": SERVICE_SYSTEM}
    system["description"] = (f"The recording system. `{SERVICE_SYSTEM}` is the service's "
                             "own and refused from clients (400 `reserved_source`).")
    _strings(event)
    _strings(components)
    return {**components, "Event": event}
