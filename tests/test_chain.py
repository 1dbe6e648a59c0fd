"""Chains, pure: extending one and catching every kind of damage at the right seq."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.canonical import canonical, parse
from ledger.chain import (
    EMPTY_HEAD,
    ChainBroken,
    ChainCheck,
    Head,
    VerdictKind,
    check_chain,
    extend,
)
from ledger.entry import GENESIS_HASH, Entry

T = "2026-11-26T19:03:22.301544Z"


def _rows(n: int) -> list[tuple[int, bytes]]:
    entries = extend(EMPTY_HEAD, "default", [{"event_id": f"e{i}", "n": i} for i in range(n)], T)
    return [(e.seq, e.encode()) for e in entries]


def _independent_hash(line: bytes) -> str:
    obj = parse(line)
    obj.pop("hash")
    return hashlib.sha256(b"\x00" + canonical(obj)).hexdigest()


def test_extend_numbers_from_one_and_links() -> None:
    entries = extend(EMPTY_HEAD, "default", [{"a": 1}, {"a": 2}, {"a": 3}], T)
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].prev_hash == GENESIS_HASH
    assert entries[1].prev_hash == entries[0].hash
    assert entries[2].prev_hash == entries[1].hash
    for e in entries:
        assert _independent_hash(e.encode()) == e.hash


def test_extend_continues_after_head_and_never_goes_back_in_time() -> None:
    head = Head(41, "ab" * 32, "2026-11-26T20:00:00.000000Z")
    entries = extend(head, "default", [{"a": 1}], "2026-11-26T19:00:00.000000Z")
    assert entries[0].seq == 42
    assert entries[0].prev_hash == "ab" * 32
    assert entries[0].recorded_at == "2026-11-26T20:00:00.000000Z"


@given(st.integers(1, 40))
def test_intact_chain_verifies(n: int) -> None:
    verdict = check_chain("default", _rows(n))
    assert verdict.ok and verdict.verified_through == n and verdict.first_bad_seq is None


def test_empty_chain_verifies() -> None:
    verdict = check_chain("default", [])
    assert verdict.ok and verdict.verified_through == 0


def _reseal(entry: Entry, **changes: object) -> bytes:
    body = {**entry.as_dict(), **changes}
    body.pop("hash")
    return Entry.seal(body["ledger"], body["seq"], body["recorded_at"], body["prev_hash"],
                      body["event"]).encode()


def test_edited_event_is_caught_at_its_seq() -> None:
    rows = _rows(20)
    rows[9] = (10, rows[9][1].replace(b'"n":9', b'"n":99'))
    verdict = check_chain("default", rows)
    assert (verdict.ok, verdict.first_bad_seq, verdict.verified_through) == (False, 10, 9)
    assert verdict.reason == "hash does not match the entry's content"
    assert verdict.kind is VerdictKind.BROKEN and verdict.head_hash == Entry.decode(rows[8][1]).hash


def test_deleted_entry_is_a_gap() -> None:
    rows = _rows(20)
    del rows[9]
    verdict = check_chain("default", rows)
    assert (verdict.first_bad_seq, verdict.verified_through) == (10, 9)
    assert verdict.reason == "entry missing (next stored position is 11)"


def test_swapped_entries_are_caught() -> None:
    rows = _rows(20)
    rows[9], rows[10] = (10, rows[10][1]), (11, rows[9][1])
    verdict = check_chain("default", rows)
    assert (verdict.first_bad_seq, verdict.reason) == (10, "entry claims seq 11")


def test_resealed_entry_breaks_the_next_link() -> None:
    rows = _rows(20)
    forged = Entry.decode(rows[9][1])
    rows[9] = (10, _reseal(forged, event={"event_id": "forged"}))
    verdict = check_chain("default", rows)
    assert verdict.first_bad_seq == 11
    assert verdict.reason == "prev_hash does not match the hash of the entry before"


def test_non_canonical_bytes_are_caught() -> None:
    rows = _rows(5)
    rows[2] = (3, rows[2][1].replace(b'{"event"', b'{ "event"', 1))
    verdict = check_chain("default", rows)
    assert (verdict.first_bad_seq, verdict.reason) == (3, "entry is not stored in canonical form")


def test_non_canonical_bytes_with_a_matching_hash_are_caught() -> None:
    """A forger who hashes the very bytes they store (a space after a colon, which every
    JSON parser reads the same) gets a matching hash: only the canonical-form check can
    tell, and two encodings of one entry would give exports two different leaf hashes."""
    rows = _rows(5)
    data = rows[4][1]
    cut = data.rfind(b',"hash":"')
    loose = data.replace(b'"ledger":"default"', b'"ledger": "default"', 1)
    assert loose.rfind(b',"hash":"') == cut  # the change is after the hash member
    body = loose[:cut] + loose[cut + 74 :]
    rehashed = hashlib.sha256(b"\x00" + body).hexdigest().encode()
    rows[4] = (5, loose[: cut + 9] + rehashed + loose[cut + 73 :])
    assert parse(rows[4][1])["hash"] == rehashed.decode()
    verdict = check_chain("default", rows)
    assert (verdict.ok, verdict.first_bad_seq, verdict.verified_through) == (False, 5, 4)
    assert verdict.reason == "entry is not stored in canonical form"


def test_entry_from_another_ledger_is_caught() -> None:
    rows = _rows(3)
    other = extend(EMPTY_HEAD, "other", [{"x": 1}], T)[0]
    rows[0] = (1, other.encode())
    verdict = check_chain("default", rows)
    assert (verdict.first_bad_seq, verdict.reason) == (1, "entry belongs to another ledger")


def test_float_in_stored_entry_is_caught() -> None:
    rows = _rows(2)
    rows[1] = (2, rows[1][1].replace(b'"n":1', b'"n":1.5'))
    verdict = check_chain("default", rows)
    assert verdict.first_bad_seq == 2


_tricky_keys = st.sampled_from(["hash", "ledger", "seq", "prev_hash", "event", "recorded_at",
                                "x"])
_tricky_values = st.text(alphabet=st.sampled_from(list(',":{}\\hashledger ')), max_size=30)


@given(st.dictionaries(_tricky_keys, _tricky_values, max_size=7), st.integers(1, 10**9))
def test_spliced_encoding_is_canonical_and_verifies(data: dict[str, str], seq: int) -> None:
    """Entries are encoded by splicing the hash into the canonical body, and verified by
    cutting it out again; both must hold whatever the event holds -- even members named
    like the entry's own fields, and strings full of quotes and commas."""
    event = {"event_id": "e", "data": data, "nested": {"hash": "h", "ledger": "l"}}
    entry = Entry.seal("default", seq, T, "ab" * 32, event)
    assert entry.encode() == canonical(entry.as_dict())
    assert _independent_hash(entry.encode()) == entry.hash
    start = Head(seq - 1, "ab" * 32, None)
    assert check_chain("default", [(seq, entry.encode())], start).ok


# --- every reason a check gives, with the entries the service really writes ---------------

BY = {"submitted_by": {"identity": "app-1", "credential": "cred-1"}}


def _attested(n: int) -> list[tuple[int, bytes]]:
    """``n`` entries as ingest writes them: each with its submitter (a service member,
    stored after the hash member)."""
    events = [{"event_id": f"e{i}", "n": i} for i in range(n)]
    entries = extend(EMPTY_HEAD, "default", events, T, [BY] * n)
    assert all(e.members == BY for e in entries)
    return [(e.seq, e.encode()) for e in entries]


def _forge(rows: list[tuple[int, bytes]], seq: int, **changes: object) -> bytes:
    """Entry ``seq`` changed and hashed again (so only the check of what changed can tell)."""
    obj = parse(rows[seq - 1][1])
    obj.update(changes)
    obj = {k: v for k, v in obj.items() if v is not ...}
    obj.pop("hash", None)
    obj["hash"] = hashlib.sha256(b"\x00" + canonical(obj)).hexdigest()
    return canonical(obj)


def _swap_hash(data: bytes, new: bytes) -> bytes:
    cut = data.rfind(b',"hash":"') + 9
    return data[:cut] + new + data[cut + 64:]


@pytest.mark.parametrize("attested", [False, True])
def test_every_break_names_its_seq_and_reason(attested: bool) -> None:
    rows = (_attested if attested else _rows)(6)
    data = rows[3][1]
    breaks: dict[str, list[tuple[int, bytes]]] = {
        "entry missing (next stored position is 5)": [*rows[:3], *rows[4:]],
        "entry duplicated (next stored position is 3)": [*rows[:3], (3, rows[2][1])],
        "entry is not valid JSON": [*rows[:3], (4, data[:-1])],
        "entry does not have exactly the entry fields": [
            *rows[:3], (4, _forge(rows, 4, prev_hash=...))],
        "entry claims seq 5": [*rows[:3], (4, rows[4][1])],
        "entry belongs to another ledger": [*rows[:3], (4, _forge(rows, 4, ledger="other"))],
        "prev_hash does not match the hash of the entry before": [
            *rows[:3], (4, _forge(rows, 4, prev_hash="ab" * 32))],
        # nested deeper than the encoder goes (the ingest schema never admits it)
        "entry holds a value the ledger never hashes": [
            *rows[:3], (4, data.replace(b'"n":3', b'"n":' + b"[" * 300 + b"]" * 300))],
        "entry has no well-formed hash": [
            *rows[:3], (4, canonical({**parse(data), "hash": 1}))],
        "hash does not match the entry's content": [*rows[:3], (4, _swap_hash(data, b"0" * 64))],
    }
    if attested:
        breaks["entry's submitted_by is not well-formed"] = [
            *rows[:3], (4, _forge(rows, 4, submitted_by={"identity": ""}))]
        breaks["entry does not have exactly the entry fields"] = [
            *rows[:3], (4, _forge(rows, 4, unknown_member=1))]
        # 64 characters, but not 64 bytes: the member after it is not where a hash ends
        wide = canonical({**parse(data), "hash": "\u00e9" * 64})
        assert check_chain("default", [*rows[:3], (4, wide)]).reason == (
            "entry has no well-formed hash")
    short = canonical({**parse(data), "hash": "0" * 63})  # a string, one digit short
    assert check_chain("default", [*rows[:3], (4, short)]).reason == (
        "entry has no well-formed hash")
    found = {}
    for reason, stored in breaks.items():
        verdict = check_chain("default", stored)
        found[reason] = (verdict.kind, verdict.first_bad_seq, verdict.verified_through,
                         verdict.reason, verdict.head_hash)
    head3 = parse(rows[2][1])["hash"]
    assert found == {reason: (VerdictKind.BROKEN, 4, 3, reason, head3) for reason in breaks}


def test_an_attested_chain_verifies_and_an_edited_submitter_is_caught() -> None:
    rows = _attested(5)
    verdict = check_chain("default", rows)
    assert (verdict.kind, verdict.verified_through) == (VerdictKind.INTACT, 5)
    assert verdict.head_hash == parse(rows[4][1])["hash"]
    for member in (b'"identity":"app-2"', b'"credential":null'):
        edited = rows[2][1].replace(b'"identity":"app-1"' if b"app-2" in member
                                    else b'"credential":"cred-1"', member)
        assert edited != rows[2][1]
        verdict = check_chain("default", [*rows[:2], (3, edited), *rows[3:]])
        assert (verdict.first_bad_seq, verdict.reason) == (
            3, "hash does not match the entry's content")


def test_a_first_entry_must_follow_the_genesis_hash() -> None:
    """A whole chain is linked from its very first entry: one forged to follow another
    hash is refused, unless the check is of a stretch (``link_first=False``)."""
    rows = _rows(3)
    forged = _forge(rows, 1, prev_hash="ab" * 32)
    verdict = check_chain("default", [(1, forged)])
    assert (verdict.first_bad_seq, verdict.reason) == (
        1, "prev_hash does not match the hash of the entry before")
    stretch = ChainCheck("default", link_first=False)
    stretch.feed(1, forged)
    assert stretch.first_prev_hash == "ab" * 32
    # A stretch broken at its first entry has verified nothing past its start.
    start = Head(8, GENESIS_HASH, "2026-11-26T00:00:00.000000Z")
    broken_first = ChainCheck("default", start, link_first=False)
    bad = _swap_hash(_rows(9)[8][1], b"0" * 64)
    with pytest.raises(ChainBroken):
        broken_first.feed(9, bad)
    assert broken_first.head == Head(8, parse(bad)["prev_hash"], start.recorded_at)


def test_a_stretch_check_records_its_first_link_and_checks_the_rest() -> None:
    rows = _attested(12)
    eighth = parse(rows[7][1])
    start = Head(8, GENESIS_HASH, None)
    check = ChainCheck("default", start, link_first=False)
    for position, data in rows[8:]:
        check.feed(position, data)
    assert check.first_prev_hash == eighth["hash"]  # the first entry's, for the caller
    last = parse(rows[11][1])
    assert check.head == Head(12, last["hash"], last["recorded_at"])
    assert check.verdict().as_dict() == {
        "ok": True, "verified_through": 12, "first_bad_seq": None, "reason": None}
    # The default check links its first entry to the start it was given.
    linked = ChainCheck("default", start)
    with pytest.raises(ChainBroken) as broken:
        linked.feed(9, rows[8][1])
    assert (broken.value.seq, str(broken.value)) == (
        9, "seq 9: prev_hash does not match the hash of the entry before")
    assert linked.first_prev_hash == eighth["hash"]


def test_a_verdict_and_a_head_as_the_callers_read_them() -> None:
    rows = _rows(4)
    rows[2] = (3, _swap_hash(rows[2][1], b"0" * 64))
    verdict = check_chain("default", rows)
    assert verdict.as_dict() == {"ok": False, "verified_through": 2, "first_bad_seq": 3,
                                 "reason": "hash does not match the entry's content"}
    entry = Entry.decode(rows[1][1])
    assert Head.of(entry) == Head(2, entry.hash, T)


def test_extend_writes_each_entrys_own_members() -> None:
    members = [{"submitted_by": {"identity": f"app-{i}", "credential": None}}
               for i in range(3)]
    entries = extend(EMPTY_HEAD, "default", [{"a": i} for i in range(3)], T, members)
    assert [e.members for e in entries] == members
    assert check_chain("default", [(e.seq, e.encode()) for e in entries]).ok


def test_a_received_member_verifies_only_in_the_shape_the_service_writes() -> None:
    """``received`` (the digest of the standard-format message an entry was made from)
    is a service member: a well-formed one verifies, any other shape breaks the chain."""
    received = {"format": "atna-syslog", "sha256": "ab" * 32}
    events = [{"event_id": f"e{i}", "n": i} for i in range(4)]
    entries = extend(EMPTY_HEAD, "default", events, T,
                     [BY, {**BY, "received": received}, BY,
                      {**BY, "received": {**received, "entry": 2}}])
    rows = [(e.seq, e.encode()) for e in entries]
    assert check_chain("default", rows).kind is VerdictKind.INTACT
    for bad in ({"format": "atna-syslog"}, {**received, "sha256": "AB" * 32},
                {**received, "entry": -1}, {**received, "extra": 1}, "ab" * 32):
        verdict = check_chain("default", [*rows[:3], (4, _forge(rows, 4, received=bad))])
        assert (verdict.kind, verdict.first_bad_seq, verdict.reason) == (
            VerdictKind.BROKEN, 4, "entry's received is not well-formed"), bad
