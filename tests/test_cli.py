"""``phi-ledger migrate | verify | export`` as an operator runs them: a real process,
configured by environment only, on SQLite and PostgreSQL. Exports are checked by a
verifier written here from CONTRACT.md alone (hashlib and json, nothing of the product).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from typing import Any

from fastapi.testclient import TestClient

from ledger.migrate import current_revision, newest_revision
from ledger.settings import Settings
from tests.support import ROOT, contract_example
from tests.test_tamper import (
    LEDGER,
    cli_env,
    edit_field,
    fill,
    run_cli,
    sample_events,
    tampering,
)

GENESIS = "0" * 64


# -- an independent verifier, from the contract alone ----------------------------------


def rfc8785(obj: Any) -> bytes:
    """RFC 8785 for ledger entries (no floats; keys are ASCII, so code-point order is
    UTF-16 order)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def first_bad_line(lines: list[bytes], after: int = 0, prev_hash: str | None = None) -> int | None:
    """The seq of the first exported line that is not the canonical, correctly hashed and
    linked successor of the one before; None when every line is."""
    prev = GENESIS if prev_hash is None else prev_hash
    for seq, line in enumerate(lines, start=after + 1):
        try:
            entry = json.loads(line)
        except ValueError:
            return seq
        if not isinstance(entry, dict) or rfc8785(entry) != line:
            return seq
        fields = {"ledger", "seq", "recorded_at", "prev_hash", "event", "hash"}
        # submitted_by: written by the service into entries since it existed (optional).
        if set(entry) not in (fields, fields | {"submitted_by"}):
            return seq
        body = {k: v for k, v in entry.items() if k != "hash"}
        digest = hashlib.sha256(b"\x00" + rfc8785(body)).hexdigest()
        if entry["seq"] != seq or entry["prev_hash"] != prev or entry["hash"] != digest:
            return seq
        prev = entry["hash"]
    return None


def export(settings: Settings, *args: str) -> list[bytes]:
    """``phi-ledger export ARGS``: its NDJSON lines (each one entry, newline-terminated)."""
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "export", *args],
        cwd=ROOT, env=cli_env(settings), capture_output=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out == b"" or out.endswith(b"\n")
    return out.splitlines()


# -- migrate ---------------------------------------------------------------------------


def test_migrate_prints_the_revision_and_is_idempotent(settings: Settings) -> None:
    revision = newest_revision()
    first = run_cli(settings, "migrate")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"database at revision {revision}"
    assert current_revision(settings.database_url) == revision

    fill(settings, n=5, batch=5)
    again = run_cli(settings, "migrate")
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert current_revision(settings.database_url) == revision
    lines = export(settings)
    assert len(lines) == 5 and first_bad_line(lines) is None


# -- verify ----------------------------------------------------------------------------


def test_verify_exits_0_when_intact_and_1_with_the_bad_seq_after_tampering(
    settings: Settings,
) -> None:
    fill(settings, n=30)
    ok = run_cli(settings, "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{LEDGER}: intact through seq 30 " in ok.stdout

    with tampering(settings.database_url) as t:
        edit_field(t)  # seq 10's actor changed, hash left
    bad = run_cli(settings, "verify", "--ledger", LEDGER)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"{LEDGER}: BROKEN at seq 10: " in bad.stdout
    assert "intact through seq 9)" in bad.stdout


# -- export ----------------------------------------------------------------------------


def test_export_writes_ndjson_that_an_independent_verifier_accepts(settings: Settings) -> None:
    fill(settings, n=30)
    lines = export(settings)
    assert len(lines) == 30
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, 31))
    assert all(json.loads(line)["ledger"] == LEDGER for line in lines)
    assert first_bad_line(lines) is None
    # the verifier is not a rubber stamp: one changed byte, one dropped line, one swap
    assert first_bad_line([*lines[:9], lines[9].replace(b"agent-", b"agenT-"), *lines[10:]]) == 10
    assert first_bad_line(lines[:9] + lines[10:]) == 10
    assert first_bad_line([*lines[:9], lines[10], lines[9], *lines[11:]]) == 10


def test_export_of_a_tampered_ledger_fails_the_independent_verifier(
    settings: Settings,
) -> None:
    fill(settings, n=30)
    with tampering(settings.database_url) as t:
        edit_field(t)
    lines = export(settings)
    assert len(lines) == 30
    assert first_bad_line(lines) == 10


def test_export_after_k_starts_at_k_plus_1(settings: Settings) -> None:
    fill(settings, n=30)
    full = export(settings)
    tail = export(settings, "--after", "12")
    assert tail == full[12:]
    assert json.loads(tail[0])["seq"] == 13
    prev = json.loads(full[11])["hash"]
    assert first_bad_line(tail, after=12, prev_hash=prev) is None
    assert export(settings, "--after", "30") == []
    assert export(settings, "--ledger", LEDGER, "--after", "0") == full


def test_export_of_an_empty_ledger_is_empty(settings: Settings) -> None:
    assert run_cli(settings, "migrate").returncode == 0
    assert export(settings) == []


# -- the HTTP reader serves the same bytes ---------------------------------------------


def _post_events(client: TestClient) -> None:
    # A non-ASCII value outside the PHI fields (those are sealed): UTF-8, not \u escapes.
    disclosure = contract_example()
    disclosure["actor"]["organization"] = "Clínica Muñoz"
    events = [*sample_events(14), disclosure, *sample_events(15, start=14)]
    for start in range(0, len(events), 10):
        r = client.post("/v1/events/batch", json={"events": events[start:start + 10]})
        assert r.status_code == 201, r.text


def test_entries_endpoint_pages_through_the_same_bytes_as_export(
    client: TestClient, settings: Settings
) -> None:
    _post_events(client)
    exported = export(settings)
    assert len(exported) == 30 and first_bad_line(exported) is None
    assert "Muñoz".encode() in exported[14]

    paged: list[bytes] = []
    after: int | None = 0
    pages = 0
    while after is not None:
        r = client.get("/v1/ledger/entries", params={"after": after, "limit": 7})
        assert r.status_code == 200, r.text
        page = r.json()
        for entry in page["entries"]:
            line = rfc8785(entry)
            assert line in r.content  # spliced verbatim, not re-encoded differently
            paged.append(line)
        after = page["next_after"]
        pages += 1
    assert pages == 5  # 7 + 7 + 7 + 7 + 2
    assert paged == exported

    r = client.get("/v1/ledger/entries", params={"after": 12, "limit": 5})
    assert [rfc8785(e) for e in r.json()["entries"]] == export(settings, "--after", "12")[:5]
