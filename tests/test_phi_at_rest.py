"""The proof that PHI is encrypted at rest: a realistic day goes in, no PHI comes out.

``phi-ledger demo --events 3000 --seed 5`` runs as an operator would run it (its own
process, configured by environment, stderr captured), then ``phi-ledger serve`` takes the
1,000 events of the older synthetic workload (``Workload(seed=5)``: phone numbers,
addresses, conditions, messages) over HTTP into a second ledger, together with bad requests
that carry PHI in bodies, paths and query strings. ``MonitoredService(seed=5).events(3000)``
regenerates exactly the demo's events, and the two ``phi_strings()`` list every PHI string
posted: MRNs, patients' names and dates of birth, phone numbers, addresses, conditions,
messages, disclosure recipients and descriptions (the staff roster's values aside: see the
proof fixture). None of them, nor their derived forms (upper and lower case,
MRNs without their prefix), may appear

* in the database: a plain ``pg_dump`` (bytea columns decoded: a dump writes them as hex,
  which would hide plaintext from a naive search) on PostgreSQL; on SQLite the raw bytes
  of the database file and of its ``-wal`` file, snapshotted while the server was still
  running (so the WAL holds frames), plus every row of every table read back through SQL
  (which also catches a string split over two overflow pages of the file);
* in the logs of the demo and of the server;
* in ``phi-ledger export``.

The test can fail: the stored events are shown to hold ``enc:v1:`` tokens and ``patient.ref``
blind indexes that reveal, with the key file, exactly the events posted; and the same search
run on a small day stored with ``LEDGER_UNSAFE_PLAINTEXT=1`` finds the PHI in the database
and in the export (and agrees with a naive search there).

One demo run per backend is shared by the tests of this module (a module-scoped twin of
the ``database_url`` fixture), because the run is the expensive part.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api.workload import Workload
from api.workload.monitoring import MonitoredService
from ledger.crypto.envelope import TOKEN_PREFIX
from ledger.data_keys import DataKeys
from ledger.protect import WORKFORCE_PLAIN
from ledger.protection import EnvelopeProtection, load_key_ring
from ledger.settings import Settings
from ledger.store import open_store
from tests.conftest import BACKENDS
from tests.support import (
    ROOT,
    ServerProcess,
    create_pg_database,
    drop_pg_database,
    require_postgres,
)

SEED = 5
N_DEMO = 3000
N_HTTP = 1000
N_CONTROL = 300
LEDGER = "default"
HTTP_LEDGER = "http"
CLI_TIMEOUT = 180

# -- searching for PHI ------------------------------------------------------------------

_WORD = re.compile(rb"[A-Za-z0-9]+")
# PHI strings are printable ASCII without quotes or backslashes, at least 6 characters
# long (test_the_workload_is_full_of_phi checks it), so every occurrence lies inside one
# maximal run of such bytes at least 6 long.
_RUN = re.compile(rb"[\x20\x21\x23-\x5b\x5d-\x7e]{6,}")


class Haystack:
    """Bytes to search for thousands of needles.

    Searching the distinct runs (see ``_RUN``) finds exactly what searching the whole
    haystack would, and is several times faster: ciphertext, hashes and binary pages
    repeat little, but names, codes and JSON keys repeat a lot. :meth:`find_naive`
    searches the whole haystack; the plaintext control checks that both agree.
    """

    def __init__(self, *parts: bytes) -> None:
        self.data = b"\n\x00\n".join(parts)
        self._runs = b"\x00".join(set(_RUN.findall(self.data)))
        self._words = set(_WORD.findall(self._runs))

    def find(self, needles: Iterable[str]) -> set[str]:
        found = set()
        for needle in needles:
            raw = needle.encode("utf-8")
            assert _RUN.fullmatch(raw), f"cannot search for {needle!r} this way"
            if raw in self._runs:
                found.add(needle)
        return found

    def find_naive(self, needles: Iterable[str]) -> set[str]:
        return {n for n in needles if n.encode("utf-8") in self.data}

    def has_word(self, word: str) -> bool:
        """Whether ``word`` (6+ letters or digits) occurs as a whole word: not inside a
        longer one, as a run of digits can inside a hex hash or a base64 token."""
        assert len(word) >= 6 and _WORD.fullmatch(word.encode("ascii")), word
        return word.encode("ascii") in self._words


def derived_forms(phi: set[str]) -> set[str]:
    """Upper- and lower-case spellings of every PHI string (those that differ)."""
    return {form for s in phi for form in (s.lower(), s.upper())} - phi


def mrn_numbers(events: Iterable[dict[str, Any]]) -> set[str]:
    """The MRNs without their ``MRN-`` prefix (looked for as whole words)."""
    numbers = {e["patient"]["id"].removeprefix("MRN-") for e in events if e.get("patient")}
    assert numbers and all(n.isdigit() and len(n) >= 6 for n in numbers), sorted(numbers)[:5]
    return numbers


def assert_no_phi(where: str, hay: Haystack, phi: set[str], numbers: set[str]) -> None:
    leaked = hay.find(phi)
    assert not leaked, f"{len(leaked)} PHI strings in {where}, e.g. {sorted(leaked)[:5]}"
    leaked = hay.find(derived_forms(phi))
    assert not leaked, f"{len(leaked)} derived PHI forms in {where}, e.g. {sorted(leaked)[:5]}"
    leaked = {n for n in numbers if hay.has_word(n)}
    assert not leaked, f"{len(leaked)} bare MRN numbers in {where}, e.g. {sorted(leaked)[:5]}"


# -- the database, as an attacker holding a copy would read it -------------------------


def pg_dump_binary() -> str:
    """The newest pg_dump installed (a newer client dumps older servers; not vice versa)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_dump"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if found:
        return str(found[-1])
    path = shutil.which("pg_dump")
    assert path, "pg_dump is not installed"
    return path


_BYTEA_HEX = re.compile(rb"\\\\x([0-9a-f]*)")


def pg_dump_text(url: str) -> bytes:
    """A plain SQL dump of the whole database, with every bytea value decoded in place."""
    dump = subprocess.run(
        [pg_dump_binary(), "--format=plain", "--no-owner", "--dbname", url],
        capture_output=True, timeout=CLI_TIMEOUT, check=False,
    )
    assert dump.returncode == 0, dump.stderr.decode(errors="replace")
    assert b"COPY public.stored_events" in dump.stdout, "the dump holds no stored_events"
    return _BYTEA_HEX.sub(lambda m: bytes.fromhex(m.group(1).decode("ascii")), dump.stdout)


def sqlite_file(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def sqlite_rows(url: str) -> bytes:
    """Every value of every table, read through SQL (BLOBs as their raw bytes)."""
    conn = sqlite3.connect(f"file:{sqlite_file(url)}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert "stored_events" in tables and "patient_keys" in tables, tables
        parts = []
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    parts.append(value if isinstance(value, bytes) else str(value).encode())
        return b"\n".join(parts)
    finally:
        conn.close()


def database_at_rest(url: str) -> dict[str, bytes]:
    """What a copy of the database shows: ``dump`` (PostgreSQL), or ``file``, ``wal``
    (when there is one) and ``rows`` (SQLite)."""
    if url.startswith("postgresql://"):
        return {"dump": pg_dump_text(url)}
    path = sqlite_file(url)
    found = {"file": path.read_bytes()}
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        found["wal"] = wal.read_bytes()
    return found | {"rows": sqlite_rows(url)}


# -- running the product as an operator would --------------------------------------------


def env_for(url: str, key_file: Path, **extra: str) -> dict[str, str]:
    """An operator's environment for this database and key file only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return env | {"LEDGER_DATABASE_URL": url, "LEDGER_KEY_FILE": str(key_file),
                  "LEDGER_LOG_FORMAT": "json", "LEDGER_LOG_LEVEL": "info", **extra}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, timeout=CLI_TIMEOUT, check=False)


def export_all(env: dict[str, str], *ledgers: str) -> dict[str, bytes]:
    out = {}
    for name in ledgers:
        result = cli(env, "export", "--ledger", name)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        out[name] = result.stdout
    return out


def json_lines(text: bytes) -> list[dict[str, Any]]:
    """Every non-blank line as a JSON object (fails on the first line that is not one)."""
    records = []
    for line in text.decode("utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            assert isinstance(record, dict), line
            records.append(record)
    return records


def post_over_http(server: ServerProcess, events: list[dict[str, Any]]) -> None:
    """The events in batches, a replay, and bad requests that carry PHI in every place a
    careless service might log it: bodies, paths, query strings, conflicting replays."""
    with server.client(timeout=60) as http:
        for start in range(0, len(events), 250):
            r = http.post("/v1/events/batch", json={"events": events[start : start + 250]})
            assert r.status_code == 201, r.text
        assert http.post("/v1/events/batch", json={"events": events[:250]}).status_code == 200

        with_data = next(e for e in events if e["action"] == "create" and e.get("data"))
        disclosed = next(e for e in events if e.get("disclosure"))
        mrn = with_data["patient"]["id"]
        # 422: a PHI-laden event with an occurred_at that has no offset.
        bad = {**with_data, "event_id": str(uuid.uuid4()), "occurred_at": "2026-11-23T06:00:00"}
        assert http.post("/v1/events", json=bad).status_code == 422
        # 409: a recorded event_id with other PHI in the body.
        conflict = {**disclosed, "disclosure": {**disclosed["disclosure"],
                                                "description": with_data["data"]["name"]}}
        assert http.post("/v1/events", json=conflict).status_code == 409
        # Malformed JSON with PHI in it, PHI in a query string and in a path.
        r = http.post("/v1/events", content=b'{"patient": {"id": "' + mrn.encode() + b'"',
                      headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500
        assert http.get("/v1/ledger/entries", params={"after": mrn}).status_code == 400
        http.get(f"/v1/patients/{mrn}/accesses", params={"purpose": "HOPERAT"})


@dataclass
class Proof:
    backend: str
    settings: Settings
    events: list[dict[str, Any]]  # the demo's, in the ledger LEDGER
    http_events: list[dict[str, Any]]  # posted over HTTP to HTTP_LEDGER
    phi: set[str]
    numbers: set[str]
    demo: subprocess.CompletedProcess[bytes]
    server_log: bytes
    at_rest: dict[str, bytes]
    exports: dict[str, bytes]


@pytest.fixture(scope="module", params=BACKENDS)
def proof(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Proof]:
    tmp = tmp_path_factory.mktemp(f"proof-{request.param}")
    if request.param == "postgres":
        require_postgres()
        url = create_pg_database()
    else:
        url = f"sqlite:///{tmp}/ledger.db"
    try:
        key_file = tmp / "keys" / "keys.json"
        env = env_for(url, key_file)
        # The demo's day (roster with staff names, dates of birth and own patient ids) and,
        # over HTTP, the older workload's (phones, addresses, conditions, messages).
        day = MonitoredService(seed=SEED)
        demo_events = list(day.events(N_DEMO))
        workload = Workload(seed=SEED)
        http_events = list(workload.events(N_HTTP))
        # Less the roster's identifiers and codes (staff ids, roles, sites), which stay
        # readable for the roster view; names, dates of birth and own patient ids are
        # sealed under each staff member's key, so they are searched for.
        roster = {v for e in demo_events if e["action"] == "staff_added"
                  for k, v in e["data"].items() if k in WORKFORCE_PLAIN and isinstance(v, str)}
        phi = (day.phi_strings() - roster) | workload.phi_strings()

        demo = cli(env, "demo", "--events", str(N_DEMO), "--seed", str(SEED))
        assert demo.returncode == 0, demo.stderr.decode(errors="replace")

        log_path = tmp / "server.log"
        server = ServerProcess(env_for(url, key_file, LEDGER_DEFAULT_LEDGER=HTTP_LEDGER),
                               log_path=log_path)
        with server:
            post_over_http(server, http_events)
            # While the server runs, SQLite's WAL holds its frames: search it now.
            running = database_at_rest(url)
        at_rest = {f"running {k}": v for k, v in running.items()}
        at_rest |= {f"stopped {k}": v for k, v in database_at_rest(url).items()}
        yield Proof(
            backend=request.param,
            settings=Settings(database_url=url, key_file=key_file),
            events=demo_events, http_events=http_events, phi=phi,
            numbers=mrn_numbers(demo_events + http_events)
            - {v.removeprefix("MRN-") for v in roster},
            demo=demo, server_log=log_path.read_bytes(), at_rest=at_rest,
            exports=export_all(env, LEDGER, HTTP_LEDGER),
        )
    finally:
        if request.param == "postgres":
            drop_pg_database(url)


# -- the tests ---------------------------------------------------------------------------


def test_the_workload_is_full_of_phi(proof: Proof) -> None:
    """Guards the rest: an empty or trivial PHI set would make every search pass."""
    assert len(proof.phi) > 1000
    assert len(proof.numbers) > 100
    kinds = {e["action"] for e in proof.events + proof.http_events}
    assert {"create", "update", "disclose", "read", "staff_added"} <= kinds
    assert all(len(s) >= 6 for s in proof.phi)  # what the search's runs rely on


def test_stored_events_hold_tokens_and_blind_indexes_that_reveal_the_posted_events(
    proof: Proof,
) -> None:
    # The service's own entries (the monitoring rule set in force) are not the demo's.
    lines = [line for line in proof.exports[LEDGER].splitlines()
             if b'"action":"monitoring_rules"' not in line]
    assert len(lines) == N_DEMO
    stored = [json.loads(line)["event"] for line in lines]
    tokens = 0
    for event in stored:
        patient = event.get("patient")
        if patient is None:
            continue
        assert re.fullmatch(r"[0-9a-f]{64}", patient["ref"]), patient
        assert patient["id"].startswith(TOKEN_PREFIX), patient
        tokens += 1
        for value in (event.get("data") or {}).values():
            assert value is None or value.startswith(TOKEN_PREFIX), event["data"]
            tokens += value is not None
        if event.get("disclosure"):
            recipient = event["disclosure"]["recipient"]
            assert recipient["name"].startswith(TOKEN_PREFIX)
            assert event["disclosure"]["description"].startswith(TOKEN_PREFIX)
            tokens += 2
    assert tokens > N_DEMO

    # ... and those tokens are the PHI: with the key file they open to exactly the events.
    store = open_store(proof.settings.database_url)
    try:
        ring = load_key_ring(proof.settings, store)
        revealed = EnvelopeProtection(ring, DataKeys(store, ring)).reveal_many(LEDGER, stored)
    finally:
        store.close()
    assert revealed == proof.events

    http = [json.loads(line)["event"] for line in proof.exports[HTTP_LEDGER].splitlines()]
    # The posted events, in the order posted. The service's own records (a recorded read,
    # an alert monitoring raised while the events were posted) may stand between them.
    posted = {e["event_id"] for e in proof.http_events}
    assert [e["event_id"] for e in http if e["event_id"] in posted] == [
        e["event_id"] for e in proof.http_events]
    assert all(e["patient"]["id"].startswith(TOKEN_PREFIX) for e in http if e.get("patient"))


def test_no_phi_in_the_database(proof: Proof) -> None:
    hay = Haystack(*proof.at_rest.values())
    assert_no_phi(f"the {proof.backend} database", hay, proof.phi, proof.numbers)
    # ... and not because the search looked in the wrong place: what was searched holds
    # the ledger's tokens and blind indexes.
    stored = [json.loads(line)["event"] for line in proof.exports[LEDGER].splitlines()]
    refs = {e["patient"].get("ref") for e in stored if e.get("patient")}
    assert refs and None not in refs, "events stored without a blind index"
    assert TOKEN_PREFIX.encode() in hay.data
    assert all(ref.encode() in hay.data for ref in refs)
    if proof.backend == "sqlite":
        # The WAL was caught with frames in it, and the files hold entries themselves.
        for part in ("running wal", "running file", "stopped file"):
            assert TOKEN_PREFIX.encode() in proof.at_rest[part], part


def test_no_phi_in_the_logs(proof: Proof) -> None:
    demo_output = proof.demo.stdout + proof.demo.stderr
    assert_no_phi("the demo's output", Haystack(demo_output), proof.phi, proof.numbers)
    # Whatever the demo logs is structured: every line that claims to be JSON is JSON.
    for line in proof.demo.stderr.decode().splitlines():
        if line.startswith("{"):
            assert isinstance(json.loads(line), dict), line

    records = json_lines(proof.server_log)
    assert records, "the server logged nothing"
    assert all("event" in r and "level" in r and "timestamp" in r for r in records), records[:3]
    routes = {(r.get("route"), r.get("status")) for r in records if r["event"] == "request"}
    assert ("/v1/events/batch", 201) in routes, routes
    assert ("/v1/events", 422) in routes and ("/v1/events", 409) in routes, routes
    assert_no_phi("the server's logs", Haystack(proof.server_log), proof.phi, proof.numbers)


def test_no_phi_in_the_export(proof: Proof) -> None:
    hay = Haystack(*proof.exports.values())
    assert hay.data.count(TOKEN_PREFIX.encode()) > N_DEMO
    assert_no_phi("the export", hay, proof.phi, proof.numbers)


def test_the_same_search_finds_phi_stored_without_encryption(
    database_url: str, tmp_path: Path
) -> None:
    """The control: with LEDGER_UNSAFE_PLAINTEXT=1 the identical pipeline and search find
    the PHI, so the searches above can fail."""
    env = env_for(database_url, tmp_path / "keys.json", LEDGER_UNSAFE_PLAINTEXT="1")
    demo = cli(env, "demo", "--events", str(N_CONTROL), "--seed", str(SEED))
    assert demo.returncode == 0, demo.stderr.decode(errors="replace")
    assert any(r["event"] == "protection.disabled"
               for r in json_lines(b"\n".join(line for line in demo.stderr.splitlines()
                                              if line.startswith(b"{"))))
    workload = MonitoredService(seed=SEED)
    events = list(workload.events(N_CONTROL))
    phi = workload.phi_strings()
    numbers = mrn_numbers(events)

    parts = database_at_rest(database_url)
    at_rest = Haystack(*parts.values())
    assert at_rest.find(phi) == at_rest.find_naive(phi) == phi
    assert any(at_rest.has_word(n) for n in numbers)
    if "file" in parts:
        # The raw SQLite file on its own, too (a string may straddle two pages of it).
        raw = Haystack(parts["file"])
        found = raw.find(phi)
        assert found == raw.find_naive(phi)
        assert len(found) > 0.9 * len(phi), f"found {len(found)} of {len(phi)}"
    with pytest.raises(AssertionError, match="PHI strings in"):
        assert_no_phi("control", at_rest, phi, numbers)

    export = Haystack(*export_all(env, LEDGER).values())
    assert export.find(phi) == export.find_naive(phi) == phi
    # Derived forms are found too when they are there.
    lowered = Haystack(export.data.lower())
    assert lowered.find(derived_forms(phi)) == {s.lower() for s in phi} - phi
