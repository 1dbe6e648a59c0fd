"""The key ring as an operator meets it, on SQLite and PostgreSQL: created safely, refused
clearly, rotated and retired, and never printed.

Every command runs in its own process (``python -m api.cli``), configured by environment.
A refusal is exit code 2 and one line on stderr that names the file (or LEDGER_KEYS) and the
problem: no Python traceback, no key material, and nothing written (ledger head, data
keys and key file as they were; no key file created).
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from api.app import build_services
from api.workload.monitoring import MonitoredService
from ledger.chain import Head
from ledger.crypto.keyring import FileKeyProvider, KeyRing, encode_ring
from ledger.crypto.log_keys import LogKeys, encode_log_keys
from ledger.data_keys import DataKeys
from ledger.protect import subject_of
from ledger.protection import EnvelopeProtection, load_key_ring
from ledger.settings import Settings
from ledger.store import open_store
from tests.support import ROOT, ServerProcess, free_port, make_event
from tests.test_tamper import LEDGER, cli_env

MRN = "MRN-0081234"
TIMEOUT = 60.0
SERVE_TIMEOUT = 20.0  # a refused serve exits at once; one that starts would hang

# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def key_settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings whose key file lives alone in its own directory (so a stray file shows)."""
    return Settings(database_url=database_url, key_file=tmp_path / "keys" / "keys.json")


def run(env: dict[str, str], *args: str, timeout: float = TIMEOUT
        ) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"phi-ledger {' '.join(args)} still running after {timeout}s "
                    f"(stderr: {error.stderr!r})")


def patient_event(mrn: str, n: int = 0) -> dict[str, Any]:
    return make_event(action="create", patient={"id": mrn},
                      resource={"type": "patient", "phi": ["name", "phone"]},
                      data={"name": f"Keyholder Number{n}", "phone": f"(617) 555-{n:04d}"})


def post(settings: Settings, events: list[dict[str, Any]]) -> None:
    svc = build_services(settings)
    try:
        svc.ingest.record_sync(LEDGER, events, batch=True)
    finally:
        svc.writer.stop()
        svc.store.close()


def key_strings(ring_json: bytes | str) -> list[str]:
    """Every spelling of every secret key in a ring file or log key file that might leak:
    base64 (standard and URL-safe, padded or not) and hex."""
    document = json.loads(ring_json)
    spellings = []
    log_seeds = [k["seed"] for k in document.get("log_keys", {}).values() if k["seed"]]
    ring_keys = [*document.get("keks", {}).values(), *filter(None, [document.get("index_key")])]
    for value in [*ring_keys, *log_seeds]:
        raw = base64.b64decode(value)
        b64 = base64.b64encode(raw).decode()
        url = base64.urlsafe_b64encode(raw).decode()
        spellings += [b64, b64.rstrip("="), url, url.rstrip("="), raw.hex(), raw.hex().upper()]
    return spellings


def assert_no_key_material(secrets: Iterable[str], *outputs: str | bytes) -> None:
    secrets = list(secrets)
    assert secrets
    for output in outputs:
        text = output.decode(errors="replace") if isinstance(output, bytes) else output
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"key material in output: {text[:300]!r}"


def assert_refused(result: subprocess.CompletedProcess[str], command: str, *,
                   names: Iterable[str], secrets: Iterable[str]) -> str:
    """Exit 2 and one clear line naming everything in ``names``; returns that line."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, f"{command}: exit {result.returncode}: {output}"
    assert "Traceback" not in output, f"{command}: {output}"
    assert result.stdout.strip() == "", f"{command}: {result.stdout}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"{command}: not one line: {result.stderr!r}"
    assert lines[0].startswith("phi-ledger: "), f"{command}: {lines[0]}"
    for name in names:
        assert name in lines[0], f"{command}: {name!r} not in {lines[0]!r}"
    assert_no_key_material(secrets, output)
    return lines[0]


def key_commands() -> dict[str, list[str]]:
    """Commands that need the key ring before they do anything."""
    return {
        "keys status": ["keys", "status"],
        "serve": ["serve", "--port", str(free_port())],
        "demo": ["demo", "--events", "5"],
        "shred": ["shred", "--patient", MRN, "--yes"],
        "keys rotate": ["keys", "rotate"],
    }


def refuse_every_command(settings: Settings, env: dict[str, str], *, names: Iterable[str],
                         secrets: Iterable[str]) -> None:
    names, secrets = list(names), list(secrets)
    before = snapshot(settings)
    for command, args in key_commands().items():
        timeout = SERVE_TIMEOUT if command == "serve" else TIMEOUT
        assert_refused(run(env, *args, timeout=timeout), command, names=names, secrets=secrets)
        assert snapshot(settings) == before, f"{command} wrote something"


def execute(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """One statement straight on the database, as someone with database rights would."""
    if url.startswith("postgresql://"):
        with psycopg.connect(url) as pg:
            cursor = pg.execute(statement.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        with conn:
            rows = conn.execute(statement, params).fetchall()
        return rows
    finally:
        conn.close()


def key_rows(url: str) -> list[tuple[str, str, str, str, bytes]]:
    rows = execute(url, "SELECT ledger, patient_ref, key_id, kek_id, wrapped FROM patient_keys"
                        " ORDER BY ledger, patient_ref")
    return [(a, b, c, d, bytes(e)) for a, b, c, d, e in rows]


def head(url: str) -> Head:
    store = open_store(url)
    try:
        return store.head(LEDGER)
    finally:
        store.close()


def snapshot(settings: Settings) -> tuple[Any, ...]:
    """Everything a refused command must leave as it was."""
    directory = settings.key_file.parent
    files = sorted(p.name for p in directory.iterdir()) if directory.exists() else None
    content = settings.key_file.read_bytes() if settings.key_file.exists() else None
    return head(settings.database_url), key_rows(settings.database_url), files, content


def reveal_all(settings: Settings) -> list[dict[str, Any]]:
    store = open_store(settings.database_url)
    try:
        ring = load_key_ring(settings, store)
        stored = [json.loads(data)["event"] for _, data in store.stream(LEDGER)]
        return EnvelopeProtection(ring, DataKeys(store, ring)).reveal_many(LEDGER, stored)
    finally:
        store.close()


def active_kek(key_file: Path) -> str:
    return json.loads(key_file.read_bytes())["active_kek"]


# -- (a) created 0600 on first start, reused after ---------------------------------------


def test_key_file_is_created_0600_on_first_start_and_reused(key_settings: Settings) -> None:
    assert not key_settings.key_file.exists()
    first, second = patient_event(MRN, 1), patient_event(MRN, 2)
    old_umask = os.umask(0)  # the file must be 0600 whatever the umask
    try:
        post(key_settings, [first])
    finally:
        os.umask(old_umask)
    info = key_settings.key_file.stat()
    assert stat.S_ISREG(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600, oct(info.st_mode)
    content = key_settings.key_file.read_bytes()
    # The PHI key ring alone: the log's signing keys are in a file of their own, beside it.
    assert set(json.loads(content)) == {"version", "active_kek", "keks", "index_key"}
    log_file = key_settings.key_file.with_name("log-keys.json")
    log_info = log_file.stat()
    assert stat.S_IMODE(log_info.st_mode) == 0o600, oct(log_info.st_mode)
    log_content = log_file.read_bytes()
    assert set(json.loads(log_content)) == {"version", "log_name", "log_keys", "active_log_key"}
    # no temp files
    assert sorted(os.listdir(key_settings.key_file.parent)) == ["keys.json", "log-keys.json"]

    post(key_settings, [second])  # a restart
    again = key_settings.key_file.stat()
    assert key_settings.key_file.read_bytes() == content
    assert (again.st_ino, stat.S_IMODE(again.st_mode)) == (info.st_ino, 0o600)
    assert (log_file.read_bytes(), log_file.stat().st_ino) == (log_content, log_info.st_ino)
    assert sorted(os.listdir(key_settings.key_file.parent)) == ["keys.json", "log-keys.json"]
    # The same ring: the patient's data key from the first start still opens, and both
    # events are under it.
    assert reveal_all(key_settings) == [first, second]
    assert len(key_rows(key_settings.database_url)) == 1


# -- (b)-(e) refusals -------------------------------------------------------------------


def test_a_missing_key_file_beside_data_keys_is_refused(key_settings: Settings,
                                                        tmp_path: Path) -> None:
    post(key_settings, [patient_event(MRN)])
    secrets = key_strings(key_settings.key_file.read_bytes())
    moved = tmp_path / "moved.json"
    key_settings.key_file.rename(moved)
    env = cli_env(key_settings)

    refuse_every_command(key_settings, env, secrets=secrets,
                         names=[str(key_settings.key_file), "does not exist"])
    assert not key_settings.key_file.exists()

    moved.rename(key_settings.key_file)  # the right file back: the same commands work
    assert run(env, "keys", "status").returncode == 0


def test_a_key_file_of_another_ring_is_refused(key_settings: Settings) -> None:
    post(key_settings, [patient_event(MRN)])
    original = key_settings.key_file.read_bytes()
    kek = active_kek(key_settings.key_file)
    FileKeyProvider(key_settings.key_file).save(KeyRing.generate())
    secrets = key_strings(original) + key_strings(key_settings.key_file.read_bytes())

    refuse_every_command(key_settings, cli_env(key_settings), secrets=secrets,
                         names=[str(key_settings.key_file), kek, "does not unwrap"])

    key_settings.key_file.write_bytes(original)  # the right ring back: works again
    assert run(cli_env(key_settings), "keys", "status").returncode == 0


def test_a_corrupted_data_key_is_refused(key_settings: Settings) -> None:
    """One patient, so the corrupted row is the one the start-up check unwraps."""
    post(key_settings, [patient_event(MRN)])
    (row,) = key_rows(key_settings.database_url)
    ledger, ref, _, kek, wrapped = row
    flipped = bytearray(wrapped)
    flipped[30] ^= 0x01
    execute(key_settings.database_url, "UPDATE patient_keys SET wrapped = ?"
            " WHERE ledger = ? AND patient_ref = ?", bytes(flipped), ledger, ref)
    secrets = key_strings(key_settings.key_file.read_bytes())

    refuse_every_command(key_settings, cli_env(key_settings), secrets=secrets,
                         names=[str(key_settings.key_file), kek, "corrupted"])

    execute(key_settings.database_url, "UPDATE patient_keys SET wrapped = ?"
            " WHERE ledger = ? AND patient_ref = ?", wrapped, ledger, ref)
    assert run(cli_env(key_settings), "keys", "status").returncode == 0


def test_a_world_readable_key_file_is_refused(key_settings: Settings) -> None:
    """Tests run as root, who can read anything: the refusal comes from st_mode alone."""
    post(key_settings, [patient_event(MRN)])
    content = key_settings.key_file.read_bytes()
    key_settings.key_file.chmod(0o644)

    refuse_every_command(key_settings, cli_env(key_settings), secrets=key_strings(content),
                         names=[str(key_settings.key_file), "0644"])
    assert stat.S_IMODE(key_settings.key_file.stat().st_mode) == 0o644  # not "fixed" silently
    assert key_settings.key_file.read_bytes() == content

    key_settings.key_file.chmod(0o600)
    assert run(cli_env(key_settings), "keys", "status").returncode == 0


# -- (f) rotation and retirement ----------------------------------------------------------


def status_lines(env: dict[str, str]) -> list[str]:
    result = run(env, "keys", "status")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()


def test_rotation_rewraps_every_data_key_and_old_keks_retire(key_settings: Settings) -> None:
    env = cli_env(key_settings)
    events = [patient_event(f"MRN-00900{i:02d}", i) for i in range(6)]
    post(key_settings, events)
    k1 = active_kek(key_settings.key_file)
    rows = key_rows(key_settings.database_url)
    assert {r[3] for r in rows} == {k1} and len(rows) == 6
    ledger_before = head(key_settings.database_url)

    rotated = run(env, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    ring = json.loads(key_settings.key_file.read_bytes())
    k2 = ring["active_kek"]
    assert k2 != k1 and set(ring["keks"]) == {k1, k2}
    assert stat.S_IMODE(key_settings.key_file.stat().st_mode) == 0o600
    assert f"active KEK {k2}; rewrapped 6 data keys" in rotated.stdout
    assert status_lines(env) == sorted([f"{k2} (active): wraps 6 data keys",
                                        f"{k1}: wraps 0 data keys"])
    after = key_rows(key_settings.database_url)
    # Same patients, same key ids (events name them), new wrapping under the new KEK.
    assert [(r[0], r[1], r[2]) for r in after] == [(r[0], r[1], r[2]) for r in rows]
    assert {r[3] for r in after} == {k2}
    assert all(a[4] != b[4] for a, b in zip(after, rows, strict=True))
    assert head(key_settings.database_url) == ledger_before  # the ledger is untouched

    # A restart with the same file: every event still reveals; new keys go under k2.
    newcomer = patient_event("MRN-0090099", 99)
    post(key_settings, [newcomer])
    assert reveal_all(key_settings) == [*events, newcomer]
    assert {r[3] for r in key_rows(key_settings.database_url)} == {k2}

    # The active KEK cannot be retired.
    secrets = key_strings(key_settings.key_file.read_bytes())
    content = key_settings.key_file.read_bytes()
    assert_refused(run(env, "keys", "retire", k2), "retire active", names=[k2],
                   secrets=secrets)
    assert key_settings.key_file.read_bytes() == content

    # An interrupted rotation: k3 is active, but k2 still wraps every data key.
    FileKeyProvider(key_settings.key_file).save(
        FileKeyProvider(key_settings.key_file).load().with_new_kek())
    k3 = active_kek(key_settings.key_file)
    content = key_settings.key_file.read_bytes()
    assert_refused(run(env, "keys", "retire", k2), "retire in use",
                   names=[k2, "still wraps 7 data keys"], secrets=key_strings(content))
    assert key_settings.key_file.read_bytes() == content
    assert_refused(run(env, "keys", "retire", "kek-00000000"), "retire unknown",
                   names=["kek-00000000"], secrets=key_strings(content))

    retired = run(env, "keys", "retire", k1)  # wraps nothing: goes
    assert retired.returncode == 0, retired.stdout + retired.stderr
    assert set(json.loads(key_settings.key_file.read_bytes())["keks"]) == {k2, k3}

    rewrap = run(env, "keys", "rotate", "--rewrap-only")
    assert rewrap.returncode == 0, rewrap.stdout + rewrap.stderr
    assert f"active KEK {k3}; rewrapped 7 data keys" in rewrap.stdout
    retired = run(env, "keys", "retire", k2)
    assert retired.returncode == 0, retired.stdout + retired.stderr
    assert status_lines(env) == [f"{k3} (active): wraps 7 data keys"]
    assert stat.S_IMODE(key_settings.key_file.stat().st_mode) == 0o600

    assert reveal_all(key_settings) == [*events, newcomer]
    verify = run(env, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_rotation_over_a_corrupted_data_key_fails_cleanly(key_settings: Settings) -> None:
    post(key_settings, [patient_event("MRN-0090001", 1), patient_event("MRN-0090002", 2)])
    kek = active_kek(key_settings.key_file)
    # The row check_ring does not sample (it unwraps the lowest patient_ref per KEK).
    ledger, ref, _, _, wrapped = key_rows(key_settings.database_url)[-1]
    execute(key_settings.database_url, "UPDATE patient_keys SET wrapped = ?"
            " WHERE ledger = ? AND patient_ref = ?",
            # Its last byte flipped, never set: a byte set to 0 that was already 0 (one run
            # in 256) corrupted nothing and the rotation rightly succeeded.
            bytes(wrapped[:-1]) + bytes([wrapped[-1] ^ 0x01]), ledger, ref)
    result = run(cli_env(key_settings), "keys", "rotate")
    assert_refused(result, "keys rotate", names=[str(key_settings.key_file), kek],
                   secrets=key_strings(key_settings.key_file.read_bytes()))


# -- (g) keys never leave the key file ------------------------------------------------------


def test_keys_never_appear_in_logs_errors_or_export(key_settings: Settings,
                                                    tmp_path: Path) -> None:
    env = cli_env(key_settings) | {"LEDGER_LOG_FORMAT": "json", "LEDGER_LOG_LEVEL": "debug"}
    demo = run(env, "demo", "--events", "300", "--seed", "2")
    assert demo.returncode == 0, demo.stderr

    log_path = tmp_path / "server.log"
    with ServerProcess(env, log_path=log_path) as server, server.client(timeout=30) as http:
        assert http.post("/v1/events", json=patient_event(MRN)).status_code == 201
        assert http.post("/v1/events", json={"event_id": "x"}).status_code == 422
        assert http.get("/v1/ledger").status_code == 200
    server_log = log_path.read_bytes()
    assert server_log.strip()

    export = run(env, "export")
    assert export.returncode == 0
    # Every entry, gapless: the 301 posted, and any the service appended itself meanwhile
    # (monitoring records its rule set's version when it first raises an alert, on its own
    # schedule, so whether that entry exists yet is not this test's to decide).
    entries = [json.loads(line) for line in export.stdout.splitlines()]
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    posted = [e for e in entries if e["event"].get("source", {}).get("system") != "phi-ledger"]
    assert len(posted) == 301
    status = run(env, "keys", "status")
    rotate = run(env, "keys", "rotate")
    assert status.returncode == rotate.returncode == 0
    # An error about this very file, too.
    key_settings.key_file.chmod(0o640)
    exposed = run(env, "keys", "status")
    key_settings.key_file.chmod(0o600)
    assert exposed.returncode == 2

    # old and new KEKs, index key; the log key
    secrets = key_strings(key_settings.key_file.read_bytes())
    secrets += key_strings(key_settings.log_key_path.read_bytes())
    assert len(secrets) == 4 * 6
    outputs: list[str | bytes] = [
        demo.stdout, demo.stderr, server_log, export.stdout, export.stderr,
        status.stdout, status.stderr, rotate.stdout, rotate.stderr, exposed.stdout, exposed.stderr]
    assert_no_key_material(secrets, *outputs)
    # The check can fail: the same search finds the keys in the key file itself.
    with pytest.raises(AssertionError, match="key material"):
        assert_no_key_material(secrets, key_settings.key_file.read_bytes())


# -- LEDGER_KEYS ----------------------------------------------------------------------------


def test_keys_from_the_environment_work_and_cannot_be_rotated(key_settings: Settings) -> None:
    ring = KeyRing.generate()
    text = encode_ring(ring).decode()
    log_text = encode_log_keys(LogKeys.generate()).decode()
    settings = Settings(database_url=key_settings.database_url,
                        key_file=key_settings.key_file, keys_json=text,
                        log_keys_json=log_text)
    env = cli_env(settings) | {"LEDGER_KEYS": text, "LEDGER_LOG_KEYS": log_text}

    demo = run(env, "demo", "--events", "200", "--seed", "3")
    assert demo.returncode == 0, demo.stderr
    assert not key_settings.key_file.parent.exists(), "a key file was created"
    events = list(MonitoredService(seed=3).events(200))  # what the demo posted
    patients = {e["patient"]["id"] for e in events if e.get("patient")}
    # and one key per staff member whose personal data a workforce entry sealed
    staff = {who for e in events if (who := subject_of(e)) is not None}
    assert len(staff) >= 20
    assert status_lines(env) == [
        f"{ring.active_kek_id} (active): wraps {len(patients) + len(staff)} data keys"]
    assert reveal_all(settings) == events

    secrets = key_strings(text) + key_strings(log_text)
    before = snapshot(settings)
    line = assert_refused(run(env, "keys", "rotate"), "keys rotate", names=["LEDGER_KEYS"],
                          secrets=secrets)
    assert "rotate" in line
    assert snapshot(settings) == before
    assert {r[3] for r in key_rows(settings.database_url)} == {ring.active_kek_id}

    other = encode_ring(KeyRing.generate()).decode()
    assert_refused(run(env | {"LEDGER_KEYS": other}, "keys", "status"), "another ring",
                   names=["LEDGER_KEYS", ring.active_kek_id],
                   secrets=secrets + key_strings(other))
    broken = text[: len(text) // 2]  # cut inside the keys: not JSON, and holds a key
    assert_refused(run(env | {"LEDGER_KEYS": broken}, "keys", "status"), "broken",
                   names=["LEDGER_KEYS", "not valid JSON"], secrets=secrets)
    assert snapshot(settings) == before
