"""The evidence file of an investigation, checked offline with ``phi-ledger verify-proof``
and the log's public key alone (no database, no server), on SQLite and PostgreSQL: every
in-scope entry is there as stored (PHI sealed), each proven against the signed checkpoint;
an edited entry, a dropped proof or another log's key fail."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api.app import create_app
from ledger.settings import Settings
from ledger.transparency.errors import TransparencyError
from ledger.transparency.evidence import verify_evidence
from tests.support import auth_headers, provision_key
from tests.test_investigations_api import P1, open_investigation, scenario
from tests.test_transparency_cli import phi_ledger


def _evidence(client: TestClient, inv: str, size: int, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/v1/investigations/{inv}/evidence")
        if r.status_code == 200 and r.json()["tree_size"] >= size:
            return r
        time.sleep(0.05)
    raise AssertionError("no checkpoint covered the investigation in time")


def test_evidence_verifies_offline_and_lists_the_scope_sealed(settings: Settings,
                                                              tmp_path: Path) -> None:
    fast = Settings(**{**settings.__dict__, "checkpoint_interval_ms": 100})
    key = provision_key(settings.database_url)
    with TestClient(create_app(fast, configure_logs=False), headers=auth_headers(key)) as c:
        seqs = scenario(c)
        inv = open_investigation(c, devices=["ws-stolen"])
        timeline = c.get(f"/v1/investigations/{inv}",
                         params={"purpose": "HOPERAT"}).json()["timeline"]
        r = _evidence(c, inv, seqs["before"])
        log_key = c.get("/v1/checkpoints/key").text.strip()
    doc = r.json()
    assert [e["seq"] for e in doc["entries"]] == sorted(i["seq"] for i in timeline)
    assert P1 not in r.text  # patient ids stay sealed
    checked = verify_evidence(r.text, log_key)
    assert checked.entries == len(timeline)

    path = tmp_path / "evidence.json"
    path.write_text(r.text)
    nowhere = tmp_path / "no-database"
    env = {"LEDGER_DATABASE_URL": f"sqlite:///{nowhere}/ledger.db",
           "LEDGER_KEY_FILE": str(nowhere / "keys.json")}
    ok = phi_ledger("verify-proof", str(path), "--key", log_key, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith(f"OK: {len(timeline)} entries") and not nowhere.exists()

    edited = json.loads(r.text)
    edited["entries"][0]["event"]["outcome"] = "success" if (
        edited["entries"][0]["event"]["outcome"] != "success") else "failure"
    dropped = json.loads(r.text)
    dropped["proofs"].pop(str(dropped["entries"][-1]["seq"]))
    for bad in (edited, dropped):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        failed = phi_ledger("verify-proof", str(tmp_path / "bad.json"), "--key", log_key,
                            env=env)
        assert failed.returncode == 1 and failed.stdout.startswith("FAILED:"), failed.stdout
    other = "other+12345678+" + log_key.split("+")[2]
    try:
        verify_evidence(r.text, other)
    except TransparencyError:
        pass
    else:
        raise AssertionError("another log's key verified the evidence")
