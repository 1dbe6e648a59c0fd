"""The views hold no PHI in the clear: a copy of the view tables reveals nothing.

A demo-like day (``Workload(seed=5).events(3000)``: MRNs, names, dates of birth, phone
numbers, addresses, conditions, messages, disclosure recipients and descriptions) goes in
through the real ingest path, the projector builds every view, and one view is rebuilt
(so freed pages of the SQLite file hold deleted view rows too). Then an attacker's copy of
the views -- ``pg_dump -t 'view_*'`` on PostgreSQL; on SQLite every row of every
``view_*`` table read through SQL, and the raw database file -- is searched for every PHI
string of the workload, their upper- and lower-case forms and the bare MRN numbers, with
the same search tests/test_phi_at_rest.py uses for the ledger. None may be found.

The search can fail: what was searched holds the views' rows (every patient's blind index,
sealed tokens, one access row per entry), and the same pipeline with encryption off
(``LEDGER_UNSAFE_PLAINTEXT``, the Plaintext protection) finds every MRN and every
disclosure's recipient and description in the same places, and ``assert_no_phi`` fails.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from api.app import build_services
from api.workload import Workload
from ledger.crypto.envelope import TOKEN_PREFIX
from ledger.settings import Settings
from projections.runner import Projector
from tests.test_phi_at_rest import (
    Haystack,
    assert_no_phi,
    mrn_numbers,
    pg_dump_binary,
    sqlite_file,
)

SEED = 5
N_EVENTS = 3000
LEDGER = "default"
VIEW_TABLES = ("view_patients", "view_accesses", "view_disclosures", "view_workforce",
               "view_partners", "view_alerts", "monitor_state")
_BYTEA_HEX = re.compile(rb"\\\\x([0-9a-f]*)")


def fill_and_project(settings: Settings) -> tuple[list[dict[str, Any]], set[str], set[str]]:
    """The workload through ingest, every view projected, one rebuilt. Returns the events,
    their PHI strings and the patients' blind indexes as the views must hold them."""
    workload = Workload(seed=SEED)
    events = list(workload.events(N_EVENTS))
    svc = build_services(settings)
    try:
        for start in range(0, N_EVENTS, 500):
            svc.ingest.record_sync(LEDGER, events[start : start + 500], batch=True)
        Projector(svc.store, protection=svc.protection).catch_up()
        Projector(svc.store).rebuild(["patients"])
        refs = {svc.protection.patient_ref(LEDGER, e["patient"]["id"])
                for e in events if e.get("patient")}
    finally:
        svc.writer.stop()
        svc.store.close()
    return events, workload.phi_strings(), refs


def views_at_rest(url: str) -> dict[str, bytes]:
    """What a copy of the views shows: a pg_dump of the view tables (PostgreSQL); every
    view row read through SQL and the raw database file (SQLite)."""
    if url.startswith("postgresql://"):
        dump = subprocess.run(
            [pg_dump_binary(), "--format=plain", "--no-owner", "--table=public.view_*",
             "--table=public.monitor_state",
             "--dbname", url], capture_output=True, timeout=180, check=False)
        assert dump.returncode == 0, dump.stderr.decode(errors="replace")
        assert b"stored_events" not in dump.stdout, "the dump is not of the views alone"
        text = _BYTEA_HEX.sub(lambda m: bytes.fromhex(m.group(1).decode()), dump.stdout)
        return {"dump": text}
    conn = sqlite3.connect(f"file:{sqlite_file(url)}?mode=ro", uri=True)
    try:
        parts: list[bytes] = []
        for table in VIEW_TABLES:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                parts.extend(v if isinstance(v, bytes) else str(v).encode() for v in row)
    finally:
        conn.close()
    return {"rows": b"\n".join(parts), "file": sqlite_file(url).read_bytes()}


def view_rows(url: str, at_rest: dict[str, bytes]) -> bytes:
    """The part of ``at_rest`` that is the views' rows alone (not the whole file)."""
    return at_rest["dump"] if url.startswith("postgresql://") else at_rest["rows"]


def assert_holds_the_views(url: str, at_rest: dict[str, bytes], events: list[dict[str, Any]],
                           refs: set[str]) -> None:
    """What was searched really is the views: every entry's event id (one access row
    each) and every patient's key as the views store it."""
    rows = view_rows(url, at_rest)
    assert all(e["event_id"].encode() in rows for e in events)
    assert all(ref.encode() in rows for ref in refs)
    if url.startswith("postgresql://"):
        for table in VIEW_TABLES:
            assert f"COPY public.{table} ".encode() in rows, table


def test_no_phi_in_the_views(database_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=database_url, key_file=tmp_path / "keys.json")
    events, phi, refs = fill_and_project(settings)
    assert len(phi) > 1000 and {"create", "update", "disclose"} <= {e["action"] for e in events}
    at_rest = views_at_rest(database_url)
    assert_holds_the_views(database_url, at_rest, events, refs)
    rows = view_rows(database_url, at_rest)
    assert rows.count(TOKEN_PREFIX.encode()) > N_EVENTS  # sealed, not dropped
    for where, data in at_rest.items():
        assert_no_phi(f"the views ({where})", Haystack(data), phi, mrn_numbers(events))


def test_the_same_search_finds_phi_in_views_built_without_encryption(
    database_url: str, tmp_path: Path
) -> None:
    """The control: LEDGER_UNSAFE_PLAINTEXT=1, the same pipeline and search."""
    settings = replace(Settings.from_env({"LEDGER_UNSAFE_PLAINTEXT": "1"}),
                       database_url=database_url, key_file=tmp_path / "keys.json")
    assert settings.unsafe_plaintext
    events, phi, refs = fill_and_project(settings)
    assert refs == {e["patient"]["id"] for e in events if e.get("patient")}  # ids in the clear
    at_rest = views_at_rest(database_url)
    assert_holds_the_views(database_url, at_rest, events, refs)
    hay = Haystack(view_rows(database_url, at_rest))
    found = hay.find(phi)
    assert found == hay.find_naive(phi)
    mrns = {e["patient"]["id"] for e in events if e.get("patient")}
    disclosed = {s for e in events if e.get("disclosure") for s in (
        e["disclosure"]["recipient"]["name"], e["disclosure"]["description"],
        e["disclosure"]["recipient"].get("address")) if s}
    assert mrns <= found and disclosed <= found
    assert len(found - mrns - disclosed) > 100, "no record values found in view_patients"
    assert any(hay.has_word(n) for n in mrn_numbers(events))
    with pytest.raises(AssertionError, match="PHI strings in"):
        assert_no_phi("control", hay, phi, mrn_numbers(events))


def _demo_roster(settings: Settings
                 ) -> tuple[list[dict[str, Any]], list[str], list[bytes]]:
    """``phi-ledger demo``'s own code posts a day (views projected); returns the roster's
    ``data`` as the ledger gives it back through the key ring, the ``monitor_state`` keys,
    and the ledger's entries as stored."""
    from api.workload.demo import run_demo
    from ledger.canonical import parse

    head = run_demo(settings, events=600, seed=SEED, ledger=LEDGER, batch=200)
    svc = build_services(settings)
    try:
        Projector(svc.store, protection=svc.protection).catch_up()
        raw = [stored for _, stored in svc.store.notifications(0, head + 10)]
        posted = svc.protection.reveal_many(LEDGER, [parse(s)["event"] for s in raw])
        with svc.store.reading() as curs:
            curs.execute("SELECT key FROM monitor_state")
            keys = [str(k) for (k,) in curs.fetchall()]
    finally:
        svc.writer.stop()
        svc.store.close()
    roster = [e["data"] for e in posted if e["action"] == "staff_added"]
    assert len(roster) >= 20, "the demo posted no roster"
    return roster, keys, raw


def _staff_phi(roster: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """Staff names, dates of birth and own patient ids; the bare MRN numbers of those."""
    own = {d["patient_id"] for d in roster if "patient_id" in d}
    phi = {d["name"] for d in roster} | {d["dob"] for d in roster} | own
    assert len(own) >= 2 and len(phi) >= 40
    return phi, {p.removeprefix("MRN-") for p in own}


def test_the_demos_staff_phi_is_sealed_in_the_monitoring_state(database_url: str,
                                                                tmp_path: Path) -> None:
    """``phi-ledger demo`` posts a staff roster with names, dates of birth and the staff's
    own patient ids; the alerts view keeps what the rules compare (``monitor_state``, as
    keyed digests and blind indexes). What the demo really posted, read back from the
    ledger, is searched for in a copy of the views (every view row on SQLite, a dump of
    the view tables on PostgreSQL)."""
    settings = Settings(database_url=database_url, key_file=tmp_path / "keys.json")
    roster, keys, _ = _demo_roster(settings)
    phi, numbers = _staff_phi(roster)
    # The state the rules read holds every staff member: what was searched holds them.
    assert sum(1 for k in keys if k.startswith("staff")) >= len(roster)
    hay = Haystack(view_rows(database_url, views_at_rest(database_url)))
    assert_no_phi("the monitoring state", hay, phi, numbers)


def test_the_demos_staff_phi_is_sealed_in_the_ledger(database_url: str,
                                                     tmp_path: Path) -> None:
    """The roster's names, dates of birth and own patient ids, as the demo posted them
    (read back through the staff members' keys), are nowhere in the ledger's stored
    entries: workforce entries seal them under their subject's data key."""
    settings = Settings(database_url=database_url, key_file=tmp_path / "keys.json")
    roster, _, raw = _demo_roster(settings)
    phi, numbers = _staff_phi(roster)
    assert_no_phi("the ledger", Haystack(*raw), phi, numbers)
