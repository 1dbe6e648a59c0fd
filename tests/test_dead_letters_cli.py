"""``phi-ledger dead-letters list`` and ``replay`` as an operator runs them, on SQLite and
PostgreSQL: the list names each letter and its reason, never its contents; a replay after
the fix (the default purpose back on) turns the letter into an entry, once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from api.app import build_services
from api.formats.syslog import syslog_message
from api.syslog.service import intake_of
from ledger.settings import Settings
from tests import atna_messages as msgs
from tests.support import ROOT


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.cli", "dead-letters", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_list_and_replay(database_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=database_url, key_file=tmp_path / "keys.json")
    svc = build_services(settings)
    try:
        intake = intake_of(svc)
        letter = intake.bury("default", "ident-1", syslog_message(msgs.dcm4che_patient_read()),
                             "AuditMessage/EventIdentification/PurposeOfUse: missing")
    finally:
        svc.writer.stop()
        svc.store.close()
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url,
           "LEDGER_KEY_FILE": str(settings.key_file), "LEDGER_LOG_LEVEL": "warning"}
    listed = _cli(env, "list")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["id"], r["format"], r["replayed_seq"]) for r in rows] == [
        (letter, "atna-syslog", None)]
    assert "PurposeOfUse" in rows[0]["reason"] and msgs.PATIENT not in listed.stdout

    # no fix yet (the default purpose turned off): still dead, nothing written
    still = _cli({**env, "LEDGER_FORMATS_DEFAULT_PURPOSE": "off"}, "replay")
    assert still.returncode == 0 and json.loads(still.stdout) == {"id": letter, "seq": None}
    fixed = _cli(env, "replay", str(letter))  # the default purpose, HOPERAT, is the fix
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads(fixed.stdout) == {"id": letter, "seq": 1}
    assert _cli(env, "list").stdout == ""
    replayed = [json.loads(line) for line in _cli(env, "list", "--all").stdout.splitlines()]
    assert replayed[0]["replayed_seq"] == 1
