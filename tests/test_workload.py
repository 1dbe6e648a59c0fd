"""The synthetic answering-service workload: valid, deterministic, rich, honest about its PHI."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from functools import cache
from itertools import pairwise
from typing import Any, get_args

import pytest

from api.workload import DEFAULT_START, Workload
from ledger.event import (
    AUTH_ACTIONS,
    PHI_ACCESS_ACTIONS,
    WORKFORCE_ACTIONS,
    Channel,
    check_event,
)

SEEDS = (0, 7, 42, 2026)
N = 5000


@cache
def _generated(seed: int, n: int = N) -> tuple[tuple[dict[str, Any], ...], frozenset[str]]:
    workload = Workload(seed)
    events = tuple(workload.events(n))
    return events, frozenset(workload.phi_strings())


def events_of(seed: int, n: int = N) -> tuple[dict[str, Any], ...]:
    return _generated(seed, n)[0]


def local_hour(event: dict[str, Any]) -> int:
    return datetime.fromisoformat(event["occurred_at"]).hour


def is_json_ready(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | str):  # never a float
        return True
    if isinstance(value, list):
        return all(map(is_json_ready, value))
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json_ready(v) for k, v in value.items())
    return False


# -- validity ------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_every_event_is_valid_and_json_ready(seed: int) -> None:
    events = events_of(seed)
    assert len(events) == N
    problems = [(i, check_event(e)) for i, e in enumerate(events) if check_event(e)]
    assert problems == []
    assert all(is_json_ready(e) for e in events)
    assert json.loads(json.dumps(events)) == list(events)


@pytest.mark.parametrize("n", [0, 1, 17, 1000])
def test_yields_exactly_n_events(n: int) -> None:
    assert len(list(Workload(3).events(n))) == n


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Workload(1).events(-1)
    with pytest.raises(ValueError):
        Workload(1, start=datetime(2026, 11, 23, 6, 0))  # no offset


def test_event_ids_are_unique_canonical_uuid4() -> None:
    ids = [e["event_id"] for e in events_of(7)]
    assert len(set(ids)) == len(ids)
    assert all(i == i.lower() and i[14] == "4" and i[19] in "89ab" for i in ids)


# -- determinism -----------------------------------------------------------------------------------
def test_same_seed_same_events() -> None:
    once = json.dumps(list(Workload(11).events(2000)))
    assert once == json.dumps(list(Workload(11).events(2000)))


def test_different_seed_different_events() -> None:
    a, b = list(Workload(11).events(500)), list(Workload(12).events(500))
    assert not {e["event_id"] for e in a} & {e["event_id"] for e in b}
    strip = [{k: v for k, v in e.items() if k != "event_id"} for e in a]
    assert strip != [{k: v for k, v in e.items() if k != "event_id"} for e in b]


def test_shorter_run_is_a_prefix_of_a_longer_one() -> None:
    assert list(Workload(7).events(300)) == list(events_of(7)[:300])


def test_start_sets_the_clock_and_offset() -> None:
    start = datetime(2027, 3, 1, 21, 30, tzinfo=timezone(timedelta(hours=1)))
    events = list(Workload(5, start=start).events(500))
    times = [datetime.fromisoformat(e["occurred_at"]) for e in events]
    assert times[0] >= start
    assert all(e["occurred_at"].endswith("+01:00") for e in events)
    assert times[-1] - times[0] < timedelta(days=2)
    assert Workload(5).start == DEFAULT_START


# -- time ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_times_never_decrease(seed: int) -> None:
    stamps = [e["occurred_at"] for e in events_of(seed)]
    times = [datetime.fromisoformat(s) for s in stamps]
    assert all(a <= b for a, b in pairwise(times))
    assert times[0] >= DEFAULT_START
    assert all(s.endswith("-05:00") and len(s) == len("2026-11-23T06:00:00.000-05:00")
               for s in stamps)


def test_after_hours_work_happens() -> None:
    night = [e for e in events_of(7) if local_hour(e) >= 22 or local_hour(e) < 6]
    assert len(night) > N // 10
    assert {"create", "disclose", "read"} <= {e["action"] for e in night}
    assert "voicemail" in {e["channel"] for e in night}


# -- coverage ------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_every_action_and_channel_appears(seed: int) -> None:
    events = events_of(seed)
    assert {e["action"] for e in events} >= PHI_ACCESS_ACTIONS | AUTH_ACTIONS | WORKFORCE_ACTIONS
    assert {e["channel"] for e in events} >= set(get_args(Channel))


def test_purposes_recipients_and_actors_are_varied() -> None:
    events = events_of(7)
    purposes = Counter(e["purpose"] for e in events if e["purpose"])
    assert set(purposes) >= {"TREAT", "ETREAT", "PATRQT", "HPAYMT", "PUBHLTH", "LEGAL", "HOPERAT"}
    assert purposes.most_common(1)[0][0] == "TREAT"
    kinds = {e["disclosure"]["recipient"]["kind"] for e in events if e["disclosure"]}
    assert kinds >= {"provider", "patient", "health_plan", "public_health", "business_associate"}
    assert kinds & {"court", "law_enforcement"}
    users = {e["actor"]["id"]: e["actor"] for e in events if e["actor"]["kind"] == "user"}
    roles = Counter(a["role"] for a in users.values())
    assert 20 <= roles["call_agent"] <= 40
    assert roles["supervisor"] >= 3 and roles["physician"] >= 3
    apps = {e["actor"]["id"] for e in events if e["actor"]["kind"] == "application"}
    assert apps >= {"sms-gateway", "ehr-bridge", "fax-server"}
    assert len({e["source"]["site"] for e in events}) >= 2
    assert {a["organization"] for a in users.values()} >= {"Northside Answering"}


def test_records_and_messages_carry_phi_fields() -> None:
    events = events_of(7)
    fields = set().union(*(e["data"] for e in events if e["action"] in ("create", "update")))
    assert fields >= {"name", "dob", "phone", "address", "condition", "callback_number",
                      "message_text", "symptoms"}
    types = {e["resource"]["type"] for e in events if e["resource"]}
    assert types >= {"patient", "message", "recording"}
    texts = [e["data"]["message_text"] for e in events if "message_text" in (e["data"] or {})]
    assert texts and all(t.endswith(".") and len(t.split()) >= 10 for t in texts)


def test_workforce_data_holds_no_phi() -> None:
    events, phi = _generated(7)
    work = [e for e in events if e["action"] in WORKFORCE_ACTIONS]
    assert work and all(e["data"] and e["patient"] is None for e in work)
    assert not {v for e in work for v in e["data"].values()} & phi


def test_population_grows_with_n() -> None:
    small = {e["patient"]["id"] for e in events_of(7) if e["patient"]}
    large = {e["patient"]["id"] for e in Workload(7).events(40_000) if e["patient"]}
    assert 150 <= len(small) <= 2000
    assert len(large) > 3 * len(small)


@pytest.mark.parametrize("seed", SEEDS)
def test_each_patient_first_appears_in_a_create(seed: int) -> None:
    first: dict[str, dict[str, Any]] = {}
    for e in events_of(seed):
        if e["patient"]:
            first.setdefault(e["patient"]["id"], e)
    assert first and all(e["action"] == "create" for e in first.values())


@pytest.mark.parametrize("seed", SEEDS)
def test_sessions_are_consistent(seed: int) -> None:
    """A user's session_id appears only between its login and its logout."""
    state: dict[str, str] = {}
    problems = []
    for e in events_of(seed):
        sid = e["actor"].get("session_id")
        if e["actor"]["kind"] != "user" or sid is None:
            continue
        if e["action"] == "login":
            problems += [e] if sid in state else []
            state[sid] = "open"
        elif state.get(sid) != "open":
            problems.append(e)
        if e["action"] == "logout":
            state[sid] = "closed"
    assert state and problems == []


# -- bad practice --------------------------------------------------------------------------------
def _unusual(ip: str | None) -> bool:
    return ip is not None and ipaddress.ip_address(ip).version == 6


@pytest.mark.parametrize("seed", SEEDS)
def test_bad_practice_is_present(seed: int) -> None:
    events = events_of(seed)
    plain = {e["channel"] for e in events
             if e["disclosure"] and e["disclosure"]["encrypted"] is False}
    assert plain == {"sms", "email"}
    # break-the-glass: an ETREAT read right after the same provider was denied that record
    denied = {(e["actor"]["id"], e["patient"]["id"]) for e in events
              if e["outcome"] == "denied" and e["action"] == "read"}
    assert any((e["actor"]["id"], e["patient"]["id"]) in denied
               for e in events if e["purpose"] == "ETREAT")
    # snooping: an agent reading 8+ records in a row with no call (query, message) between
    runs: defaultdict[str, int] = defaultdict(int)
    longest = 0
    for e in events:
        if e["actor"].get("role") == "call_agent" and e["actor"]["kind"] == "user":
            reading = e["action"] == "read" and e["resource"]["type"] == "patient"
            runs[e["actor"]["id"]] = runs[e["actor"]["id"]] + 1 if reading else 0
            longest = max(longest, runs[e["actor"]["id"]])
    assert longest >= 8
    # a successful login from an address nobody uses, at night, followed by record access
    odd = [e for e in events if _unusual(e["actor"]["ip"]) and e["outcome"] == "success"]
    assert any(e["action"] == "login" and 2 <= local_hour(e) < 5 for e in odd)
    assert {"read", "export"} <= {e["action"] for e in odd}
    # a removed staff member's account logging in and reading afterwards
    removed = {e["data"]["staff_id"]: e["occurred_at"] for e in events
               if e["action"] == "staff_removed"}
    later = [e for e in events if e["actor"]["id"] in removed and e["outcome"] == "success"
             and datetime.fromisoformat(e["occurred_at"])
             > datetime.fromisoformat(removed[e["actor"]["id"]])]
    assert {"login", "read"} <= {e["action"] for e in later}
    # refusals, failures and a burst of failed logins from one outside address
    assert {"denied", "failure"} <= {e["outcome"] for e in events}
    bursts = Counter(e["actor"]["ip"] for e in events if e["action"] == "login_failed")
    assert any(_unusual(ip) and count >= 3 for ip, count in bursts.items())


def test_bad_practice_is_a_small_share() -> None:
    events = events_of(7)
    bad = [e for e in events if (e["disclosure"] and e["disclosure"]["encrypted"] is False)
           or e["purpose"] == "ETREAT" or e["outcome"] == "denied"
           or _unusual(e["actor"]["ip"])]
    assert 0.01 * N <= len(bad) <= 0.08 * N


# -- PHI -----------------------------------------------------------------------------------------
def test_phi_strings_start_empty_and_follow_generation() -> None:
    workload = Workload(7)
    assert workload.phi_strings() == set()
    dumped = json.dumps(list(workload.events(200)))
    first = workload.phi_strings()
    assert first and first == {s for s in _generated(7)[1] if s in dumped}
    list(workload.events(N))
    assert first < workload.phi_strings() == _generated(7)[1]


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_phi_strings_are_real_distinctive_values(seed: int) -> None:
    events, phi = _generated(seed)
    dumped = json.dumps(events)
    assert len(phi) > 1000
    assert all(len(s) >= 6 for s in phi)
    assert [s for s in phi if s not in dumped] == []
    # every patient, every name and every message text written is among them
    assert {e["patient"]["id"] for e in events if e["patient"]} <= phi
    written = {v for e in events if e["action"] in ("create", "update")
               for k, v in e["data"].items() if k in ("name", "phone", "message_text", "symptoms")}
    assert written <= phi
    disclosed = {e["disclosure"]["description"] for e in events if e["disclosure"]}
    for e in (e for e in events if e["disclosure"]):
        disclosed |= {e["disclosure"]["recipient"]["name"]} | (
            {e["disclosure"]["recipient"]["address"]} - {None}
            if "address" in e["disclosure"]["recipient"] else set())
    assert disclosed <= phi
    # outside the PHI-bearing fields, no PHI string turns up by chance
    rest = json.dumps([{k: v for k, v in e.items() if k not in ("patient", "data", "disclosure")}
                       for e in events])
    assert [s for s in phi if s in rest] == []


# -- performance ---------------------------------------------------------------------------------
def test_hundred_thousand_events_are_generated() -> None:
    """The generator reaches a large count (its speed is a benchmark's figure, not a
    test's: a wall-clock bound here would fail on a busy machine)."""
    assert sum(1 for _ in Workload(7).events(100_000)) == 100_000
