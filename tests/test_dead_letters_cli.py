"""``phi-ledger dead-letters list`` and ``replay`` as an operator runs them, on SQLite and
PostgreSQL: the list names each letter and its reason, never its contents; a replay after
the fix (the default purpose back on) turns the letter into an entry, once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from api.app import build_services
from api.cli import app
from api.formats.codes import sha256_hex
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


def test_list_of_one_ledger_names_only_its_letters(database_url: str, tmp_path: Path) -> None:
    """``list --ledger`` is how an operator of many ledgers finds one's letters: each row
    is the letter's columns, never its bytes. In this process (CliRunner), so that the
    filter and the row's making are seen by mutation testing too."""
    settings = Settings(database_url=database_url, key_file=tmp_path / "keys.json")
    svc = build_services(settings)
    read = syslog_message(msgs.dcm4che_patient_read())
    try:
        intake = intake_of(svc)
        intake.bury("default", "ident-1", syslog_message(msgs.login()), "syslog: one")
        theirs = intake.bury("other", "ident-2", read, "PurposeOfUse: missing")
    finally:
        svc.writer.stop()
        svc.store.close()
    env = {"LEDGER_DATABASE_URL": database_url, "LEDGER_KEY_FILE": str(settings.key_file),
           "LEDGER_LOG_LEVEL": "warning"}
    listed = CliRunner().invoke(app, ["dead-letters", "list", "--ledger", "other"], env=env)
    assert listed.exit_code == 0, listed.output
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row.pop("received_at")
    assert row == {"id": theirs, "ledger": "other", "format": "atna-syslog",
                   "sender": "ident-2", "sha256": sha256_hex(read),
                   "reason": "PurposeOfUse: missing", "replayed_seq": None,
                   "replayed_at": None}
    assert msgs.PATIENT not in listed.stdout
