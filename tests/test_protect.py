"""The stored form of events: PHI sealed per field, bound to ledger, patient and field."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.canonical import MAX_SAFE_INTEGER, canonical
from ledger.crypto import DataKey, EnvelopeError, blind_index, field_aad, is_token, open_token
from ledger.crypto.envelope import TOKEN_PREFIX
from ledger.event import check_event
from ledger.protect import (
    ERASED,
    PHI_FIELDS,
    protect,
    protect_subject,
    reveal,
    sealed_under,
    subject_of,
)
from projections.view import Change
from projections.workforce import fold_partner, fold_staff
from projections.workforce import subject_of as workforce_subject_of

INDEX_KEY = bytes(range(32))
LEDGER = "default"

# The example of CONTRACT.md, field for field.
EXAMPLE: dict[str, Any] = {
    "event_id": "0b6f1b9e-6c1e-4f5e-9d7e-2f1c8a7d3b10",
    "occurred_at": "2026-11-26T14:03:22.120-05:00",
    "action": "disclose",
    "outcome": "success",
    "actor": {"id": "agent-0042", "kind": "user", "role": "call_agent",
              "organization": "Northside Answering", "mfa": True, "device_id": "ws-17",
              "ip": "198.51.100.7", "session_id": "s-9c1"},
    "patient": {"id": "MRN-0012345"},
    "resource": {"type": "message", "id": "msg-88121", "phi": ["name", "phone", "condition"]},
    "purpose": "TREAT",
    "channel": "secure_sms",
    "disclosure": {"recipient": {"name": "Dr. A. Rivera", "address": "on-call pager 4471",
                                 "kind": "provider"},
                   "description": "after-hours message: callback number and symptoms",
                   "encrypted": True},
    "data": None,
    "source": {"system": "answer-desk", "site": "Northside"},
}
EXAMPLE_PHI = ["MRN-0012345", "Dr. A. Rivera", "on-call pager 4471",
               "after-hours message: callback number and symptoms"]

UPDATE: dict[str, Any] = {
    "event_id": "5d1c3f0e-2a4b-4c6d-8e9f-0a1b2c3d4e5f",
    "occurred_at": "2026-11-26T14:05:00Z",
    "action": "update",
    "outcome": "success",
    "actor": {"id": "agent-0042", "kind": "user"},
    "patient": {"id": "MRN-0012345"},
    "purpose": "TREAT",
    "channel": "ehr",
    "data": {"phone": "+1 555 0100 7788", "allergies": ["penicillin", "latex"],
             "birth_year": 1961, "deceased": False, "middle_name": None},
}

LOGIN: dict[str, Any] = {
    "event_id": "9a8b7c6d-5e4f-4a3b-9c1d-0e1f2a3b4c5d",
    "occurred_at": "2026-11-26T08:00:00Z",
    "action": "login",
    "outcome": "success",
    "actor": {"id": "agent-0042", "kind": "user", "ip": "198.51.100.7"},
}


def ref_of(event: dict[str, Any], ledger: str = LEDGER) -> str:
    return blind_index(INDEX_KEY, ledger, "patient", event["patient"]["id"])


def protected_paths(event: dict[str, Any]) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, value) of every PHI field present in ``event``, driven by PHI_FIELDS."""
    for dotted in PHI_FIELDS:
        parts = dotted.split(".")
        if parts[-1] == "*":
            container: Any = event
            for part in parts[:-1]:
                container = container.get(part) if isinstance(container, dict) else None
            for name, value in (container or {}).items():
                if value is not None:
                    yield (*parts[:-1], name), value
            continue
        node: Any = event
        for part in parts:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            yield tuple(parts), node


def get(event: dict[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        event = event[part]
    return event


def put(event: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        event = event[part]
    event[path[-1]] = value


def containers(value: Any) -> Iterator[Any]:
    if isinstance(value, dict | list):
        yield value
        for item in value.values() if isinstance(value, dict) else value:
            yield from containers(item)


def test_examples_are_valid_posted_events() -> None:
    for event in (EXAMPLE, UPDATE, LOGIN):
        assert check_event(event) == []


def test_phi_fields_name_what_the_contract_says_is_phi() -> None:
    assert set(PHI_FIELDS) == {
        "patient.id", "disclosure.recipient.name", "disclosure.recipient.address",
        "disclosure.description", "data.*",
    }


@pytest.mark.parametrize("event", [EXAMPLE, UPDATE], ids=["disclose", "update"])
def test_round_trip(event: dict[str, Any]) -> None:
    dek, ref = DataKey.generate(), ref_of(event)
    stored = protect(event, LEDGER, ref, dek)
    assert reveal(stored, LEDGER, dek) == event


@pytest.mark.parametrize("event", [EXAMPLE, UPDATE], ids=["disclose", "update"])
def test_stored_form_seals_every_phi_field_and_nothing_else(event: dict[str, Any]) -> None:
    dek, ref = DataKey.generate(), ref_of(event)
    stored = protect(event, LEDGER, ref, dek)
    assert stored["patient"] == {"ref": ref, "id": stored["patient"]["id"]}
    sealed = dict(protected_paths(stored))
    assert sealed.keys() == dict(protected_paths(event)).keys()
    assert all(is_token(v) for v in sealed.values())
    # Un-protect by hand: what remains must be the posted event verbatim.
    rebuilt = copy.deepcopy(stored)
    for path, value in protected_paths(event):
        put(rebuilt, path, value)
    rebuilt["patient"].pop("ref")
    assert rebuilt == event
    if event.get("data"):
        assert stored["data"].keys() == event["data"].keys()  # field names are kept
        assert stored["data"]["middle_name"] is None


def test_tokens_are_bound_by_the_documented_aad() -> None:
    dek, ref = DataKey.generate(), ref_of(UPDATE)
    stored = protect(UPDATE, LEDGER, ref, dek)
    aad = field_aad(LEDGER, ref, "patient.id")
    assert open_token(dek, stored["patient"]["id"], aad) == b"MRN-0012345"
    for name in ("phone", "allergies", "birth_year", "deceased"):
        token = stored["data"][name]
        aad = field_aad(LEDGER, ref, f"data.{name}")
        assert open_token(dek, token, aad) == canonical(UPDATE["data"][name])


def test_plaintext_appears_nowhere_in_the_stored_form() -> None:
    dek = DataKey.generate()
    stored = canonical(protect(EXAMPLE, LEDGER, ref_of(EXAMPLE), dek)).decode()
    for value in EXAMPLE_PHI:
        assert value not in stored
        assert canonical(value).decode() not in stored
    assert "Northside Answering" in stored  # not PHI, still readable


def test_protect_never_mutates_and_copies_every_protected_path() -> None:
    event = copy.deepcopy(UPDATE)
    event["resource"] = {"type": "record", "phi": ["phone"]}
    before = copy.deepcopy(event)
    stored = protect(event, LEDGER, ref_of(event), DataKey.generate())
    assert event == before
    # Objects holding protected fields are new; untouched ones (actor, resource) may be
    # shared, since ingest never changes a validated event.
    for path in ("patient", "data"):
        assert stored[path] is not event[path]
    assert stored is not event
    example = copy.deepcopy(EXAMPLE)
    sealed = protect(example, LEDGER, ref_of(example), DataKey.generate())
    assert sealed["disclosure"] is not example["disclosure"]
    assert sealed["disclosure"]["recipient"] is not example["disclosure"]["recipient"]
    assert example == EXAMPLE
    revealed = reveal(stored, LEDGER, None)
    assert not {id(c) for c in containers(revealed)} & {id(c) for c in containers(stored)}


def test_each_protect_draws_fresh_nonces() -> None:
    dek, ref = DataKey.generate(), ref_of(EXAMPLE)
    a, b = protect(EXAMPLE, LEDGER, ref, dek), protect(EXAMPLE, LEDGER, ref, dek)
    for (path, x), (_, y) in zip(protected_paths(a), protected_paths(b), strict=True):
        assert x != y, path


def test_disclosure_without_address_gets_none_added() -> None:
    event = copy.deepcopy(EXAMPLE)
    del event["disclosure"]["recipient"]["address"]
    dek, ref = DataKey.generate(), ref_of(event)
    stored = protect(event, LEDGER, ref, dek)
    assert "address" not in stored["disclosure"]["recipient"]
    assert reveal(stored, LEDGER, dek) == event
    assert "address" not in reveal(stored, LEDGER, None)["disclosure"]["recipient"]


def test_events_without_a_patient_are_stored_unchanged() -> None:
    dek = DataKey.generate()
    stored = protect(LOGIN, LEDGER, "unused", dek)
    assert stored == LOGIN and stored is not LOGIN and stored["actor"] is not LOGIN["actor"]
    assert sealed_under(stored) is None
    assert reveal(stored, LEDGER, dek) == LOGIN
    assert reveal(stored, LEDGER, None) == LOGIN


def test_sealed_under_names_the_patients_key() -> None:
    ref = ref_of(EXAMPLE)
    assert sealed_under(protect(EXAMPLE, LEDGER, ref, DataKey.generate(), "k1")) == (ref, "k1")
    assert sealed_under(protect(EXAMPLE, LEDGER, ref, DataKey.generate())) == (ref, None)
    assert sealed_under(EXAMPLE) is None


# --- workforce events: their subject's personal data ---------------------------------

STAFF_ADDED: dict[str, Any] = {
    "event_id": "1f2e3d4c-5b6a-4789-9abc-def012345678",
    "occurred_at": "2026-11-26T07:00:00Z",
    "action": "staff_added",
    "actor": {"id": "hr-admin", "kind": "user", "role": "admin", "mfa": True},
    "outcome": "success",
    "data": {"staff_id": "u-417", "role": "nurse", "site": "north", "name": "Ana M. Reyes",
             "dob": "1988-02-29", "patient_id": "MRN-2231", "shift": "19:00-07:00",
             "note": None},
}
STAFF_PERSONAL = ("Ana M. Reyes", "1988-02-29", "MRN-2231", "19:00-07:00")


def subject_ref(who: str = "u-417", ledger: str = LEDGER) -> str:
    return blind_index(INDEX_KEY, ledger, "subject", who)


def test_a_staff_members_personal_data_is_sealed_under_their_key() -> None:
    dek = DataKey.generate()
    assert subject_of(STAFF_ADDED) == "u-417"
    stored = protect_subject(STAFF_ADDED, LEDGER, subject_ref(), dek, "k7")
    assert stored["subject"] == {"ref": subject_ref(), "key": "k7"}
    assert sealed_under(stored) == (subject_ref(), "k7")
    data = stored["data"]
    # what the roster view reads stays readable; nulls stay null; the rest is sealed
    assert {k: data[k] for k in ("staff_id", "role", "site", "note")} == {
        "staff_id": "u-417", "role": "nurse", "site": "north", "note": None}
    text = canonical(stored).decode()
    assert not any(value in text for value in STAFF_PERSONAL)
    assert all(data[k].startswith(TOKEN_PREFIX) for k in ("name", "dob", "patient_id", "shift"))
    assert reveal(stored, LEDGER, dek) == STAFF_ADDED
    assert STAFF_ADDED["data"]["name"] == "Ana M. Reyes"  # the input is untouched


def test_a_shredded_staff_members_personal_data_reads_erased() -> None:
    stored = protect_subject(STAFF_ADDED, LEDGER, subject_ref(), DataKey.generate())
    erased = reveal(stored, LEDGER, None)
    assert "subject" not in erased
    assert {k: erased["data"][k] for k in ("name", "dob", "patient_id", "shift")} == dict.fromkeys(
        ("name", "dob", "patient_id", "shift"), ERASED)
    assert erased["data"]["staff_id"] == "u-417"


def test_a_staff_token_opens_only_for_its_subject_and_ledger() -> None:
    dek = DataKey.generate()
    stored = protect_subject(STAFF_ADDED, LEDGER, subject_ref(), dek)
    moved = copy.deepcopy(stored)
    moved["subject"]["ref"] = subject_ref("u-418")
    with pytest.raises(EnvelopeError):
        reveal(moved, LEDGER, dek)
    with pytest.raises(EnvelopeError):
        reveal(stored, "other", dek)
    swapped = copy.deepcopy(stored)
    swapped["data"]["name"], swapped["data"]["dob"] = stored["data"]["dob"], stored["data"]["name"]
    with pytest.raises(EnvelopeError):
        reveal(swapped, LEDGER, dek)
    del moved["subject"]["ref"]
    with pytest.raises(EnvelopeError, match="subject without a ref"):
        reveal(moved, LEDGER, dek)


@pytest.mark.parametrize(("change", "subject"), [
    ({}, "u-417"),
    ({"data": {"partner": "ba-9", "contact": "Dr. Lee"}, "action": "baa_signed"}, "ba-9"),
    ({"data": {"name": "Ana Reyes"}, "resource": {"type": "staff", "id": "u-9"}}, "u-9"),
    ({"data": {"name": "Ana Reyes"}}, "hr-admin"),
    ({"data": {"staff_id": "u-417", "role": "nurse", "site": "n", "course": "HIPAA 101"}}, None),
    ({"data": {"staff_id": "u-417", "name": None}}, None),
    ({"data": None}, None),
    ({"action": "login"}, None),
    ({"patient": {"id": "MRN-1"}}, None),
])
def test_subject_of(change: dict[str, Any], subject: str | None) -> None:
    assert subject_of({**STAFF_ADDED, **change}) == subject


WORKFORCE_EVENTS: list[dict[str, Any]] = [
    STAFF_ADDED,
    {**STAFF_ADDED, "action": "role_changed",
     "data": {"staff_id": "u-417", "to_role": "charge nurse", "shift": "07:00-19:00"}},
    {**STAFF_ADDED, "action": "training_completed",
     "data": {"staff_id": "u-417", "course": "HIPAA 2026", "score": 97}},
    {**STAFF_ADDED, "action": "mfa_enrolled",
     "data": {"staff_id": "u-417", "method": "totp", "phone": "+1 555 0100"}},
    {**STAFF_ADDED, "action": "staff_removed",
     "data": {"staff_id": "u-417", "reason": "left", "home_address": "1 Elm St"}},
    {**STAFF_ADDED, "action": "baa_signed",
     "data": {"partner": "ba-9", "service": "billing", "agreement_id": "A-1",
              "signatory": "Dr. Lee"}},
]


@pytest.mark.parametrize("event", WORKFORCE_EVENTS, ids=lambda e: e["action"])
def test_the_roster_reads_a_sealed_workforce_event_without_a_key(event: dict[str, Any]) -> None:
    """The workforce view folds stored forms with no key: from the sealed form it builds
    exactly the row it builds from the posted event."""
    who = subject_of(event)
    assert who is not None
    stored = protect_subject(event, LEDGER, subject_ref(who), DataKey.generate())
    assert canonical(stored) != canonical(event)  # something was sealed

    def row(e: dict[str, Any]) -> object:
        change = Change(1, LEDGER, 1, "2026-11-26T07:00:00Z", e, "2026-11-26T07:00:00Z")
        kind, key = workforce_subject_of(change) or ("", "")
        fold = fold_staff if kind == "staff" else fold_partner
        return fold(None, change, key)

    assert row(stored) == row(event)


# --- shredding -----------------------------------------------------------------------


@pytest.mark.parametrize("event", [EXAMPLE, UPDATE], ids=["disclose", "update"])
def test_reveal_without_key_erases_every_protected_field(event: dict[str, Any]) -> None:
    stored = protect(event, LEDGER, ref_of(event), DataKey.generate())
    erased = reveal(stored, LEDGER, None)
    assert erased["patient"] == {"id": ERASED}
    paths = [path for path, _ in protected_paths(event)]
    assert paths
    for path in paths:
        assert get(erased, path) == ERASED, path
    # Everything that is not PHI is still there, untouched.
    rebuilt = copy.deepcopy(erased)
    for path, value in protected_paths(event):
        put(rebuilt, path, value)
    assert rebuilt == event
    assert not any(v in canonical(erased).decode() for v in EXAMPLE_PHI)


def test_reveal_without_key_never_raises_even_on_garbage() -> None:
    stored = protect(EXAMPLE, LEDGER, ref_of(EXAMPLE), DataKey.generate())
    stored["disclosure"]["description"] = "enc:v1:garbage"
    del stored["patient"]["ref"]
    erased = reveal(stored, LEDGER, None)
    assert erased["disclosure"]["description"] == ERASED
    assert erased["patient"] == {"id": ERASED}


# --- misuse: wrong key, ledger, patient, field ---------------------------------------


def test_wrong_key_fails() -> None:
    stored = protect(EXAMPLE, LEDGER, ref_of(EXAMPLE), DataKey.generate())
    with pytest.raises(EnvelopeError):
        reveal(stored, LEDGER, DataKey.generate())


def test_wrong_ledger_fails() -> None:
    dek = DataKey.generate()
    stored = protect(EXAMPLE, LEDGER, ref_of(EXAMPLE), dek)
    with pytest.raises(EnvelopeError):
        reveal(stored, "tenant-b", dek)


def test_stored_under_another_patient_ref_fails() -> None:
    dek = DataKey.generate()
    stored = protect(EXAMPLE, LEDGER, ref_of(EXAMPLE), dek)
    stored["patient"]["ref"] = blind_index(INDEX_KEY, LEDGER, "patient", "MRN-9999999")
    with pytest.raises(EnvelopeError):
        reveal(stored, LEDGER, dek)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (("disclosure", "recipient", "name"), ("disclosure", "description")),
        (("disclosure", "description"), ("disclosure", "recipient", "address")),
        (("patient", "id"), ("disclosure", "recipient", "name")),
        (("disclosure", "recipient", "address"), ("patient", "id")),
    ],
)
def test_a_token_moved_to_another_field_fails(
    source: tuple[str, ...], target: tuple[str, ...]
) -> None:
    dek = DataKey.generate()
    stored = protect(EXAMPLE, LEDGER, ref_of(EXAMPLE), dek)
    put(stored, target, get(stored, source))
    with pytest.raises(EnvelopeError):
        reveal(stored, LEDGER, dek)


def test_data_tokens_swapped_between_fields_fail() -> None:
    dek = DataKey.generate()
    stored = protect(UPDATE, LEDGER, ref_of(UPDATE), dek)
    data = stored["data"]
    data["phone"], data["allergies"] = data["allergies"], data["phone"]
    with pytest.raises(EnvelopeError):
        reveal(stored, LEDGER, dek)


def test_a_token_from_another_patient_or_ledger_fails() -> None:
    # Same data key on purpose: only the AAD stops the transplant.
    dek = DataKey.generate()
    mine = protect(EXAMPLE, LEDGER, ref_of(EXAMPLE), dek)
    other_patient = copy.deepcopy(EXAMPLE)
    other_patient["patient"]["id"] = "MRN-7654321"
    theirs = protect(other_patient, LEDGER, ref_of(other_patient), dek)
    elsewhere = protect(EXAMPLE, "tenant-b", ref_of(EXAMPLE), dek)
    for donor in (theirs, elsewhere):
        victim = copy.deepcopy(mine)
        victim["disclosure"]["description"] = donor["disclosure"]["description"]
        with pytest.raises(EnvelopeError):
            reveal(victim, LEDGER, dek)


def test_a_plaintext_value_in_a_protected_field_fails() -> None:
    dek = DataKey.generate()
    stored = protect(UPDATE, LEDGER, ref_of(UPDATE), dek)
    stored["data"]["phone"] = "+1 555 0100 7788"
    with pytest.raises(EnvelopeError):
        reveal(stored, LEDGER, dek)


def test_a_tampered_character_fails() -> None:
    dek = DataKey.generate()
    stored = protect(EXAMPLE, LEDGER, ref_of(EXAMPLE), dek)
    token = stored["patient"]["id"]
    i = len(token) // 2
    stored["patient"]["id"] = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
    with pytest.raises(EnvelopeError):
        reveal(stored, LEDGER, dek)


# --- generated data ------------------------------------------------------------------

MARK = "\u2063phi\u2063"  # an invisible separator, so a marked value never occurs by chance
# Text the ledger accepts: NUL and lone surrogates are refused at ingest (a 400).
texts = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
    st.text(texts, max_size=40).map(lambda s: MARK + s),
)
values = st.one_of(scalars, st.lists(scalars, max_size=5))
field_names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9_.-]{0,20}\Z")
data_dicts = st.dictionaries(field_names, values, min_size=1, max_size=12)


def marked_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from marked_strings(item)


@settings(max_examples=200, deadline=None)
@given(data_dicts, st.text(texts.filter(lambda c: c != "/"), max_size=30).map(lambda s: MARK + s))
def test_generated_data_round_trips_and_never_leaks(data: dict[str, Any], mrn: str) -> None:
    event = {**UPDATE, "patient": {"id": mrn}, "data": data}
    assert check_event(event) == []
    dek, ref = DataKey.generate(), ref_of(event)
    stored = protect(event, LEDGER, ref, dek)
    assert reveal(stored, LEDGER, dek) == event
    text = canonical(stored).decode()
    assert mrn not in text
    for name, value in data.items():
        if value is None:
            assert stored["data"][name] is None
            continue
        assert is_token(stored["data"][name])
        for plain in marked_strings(value):
            assert plain not in text
    erased = reveal(stored, LEDGER, None)
    assert erased["data"] == {k: (None if v is None else ERASED) for k, v in data.items()}
    assert erased["patient"] == {"id": ERASED}
