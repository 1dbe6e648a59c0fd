"""The responder's walk with the CLI alone, on SQLite and PostgreSQL: events in the
database, then ``phi-ledger investigations open`` -> ``show`` (duties, counts, timeline;
the reads recorded as ``cli:NAME``) -> ``evidence`` -> ``verify-proof`` offline -> ``close``
-> ``list``. Bad options exit 2 naming the option and write nothing."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

from api.app import build_services
from ledger.settings import Settings
from tests.test_investigations_api import P1, P2, P3, THIEF, ev, record
from tests.test_transparency_cli import db_env, phi_ledger


def _seed(settings: Settings) -> None:
    svc = build_services(settings)
    try:
        svc.ingest.record_sync("default", [
            record(P1, "2026-11-01T10:00:00Z", state="NY"),
            ev("login", THIEF, "2026-11-24T22:01:00-05:00"),
            ev("read", THIEF, "2026-11-25T03:05:00Z", P1),
            ev("export", THIEF, "2026-11-25T03:07:00Z", P2),
            ev("read", THIEF, "2026-11-25T03:08:00Z", P3),
        ], batch=True)
    finally:
        svc.writer.stop()
        svc.store.close()


def test_from_a_stolen_laptop_to_duties_and_evidence_with_the_cli(settings: Settings,
                                                                 tmp_path: Path) -> None:
    _seed(settings)
    env = db_env(settings)
    opened = phi_ledger("investigations", "open", "--title", "Stolen laptop",
                        "--discovered-at", "2026-11-26T09:00:00-05:00",
                        "--from", "2026-11-24T00:00:00Z", "--device", "ws-stolen",
                        "--as", "rita", env=env)
    assert opened.returncode == 0, opened.stdout + opened.stderr
    inv = opened.stdout.strip().splitlines()[-1]

    shown = phi_ledger("investigations", "show", inv, "--purpose", "HOPERAT", "--as", "rita",
                       env=env)
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    assert body["counts"] == {"patients": 3, "unsecured": 3,
                              "by_state": {"NY": 1, "unknown": 2}}
    assert [d["to"] for d in body["duties"]] == ["individuals", "hhs"]
    assert body["duties"][0]["deadline"] == "2027-01-25"
    assert [i["action"] for i in body["timeline"]] == ["login", "read", "export", "read"]
    assert {a["patient"]["id"] for a in body["affected"]} == {P1, P2, P3}

    html = tmp_path / "report.html"
    assert phi_ledger("investigations", "show", inv, "--purpose", "HOPERAT", "--format",
                      "html", "--output", str(html), env=env).returncode == 0
    assert 'class="mark ' in html.read_text()

    evidence = tmp_path / "evidence.json"
    made = phi_ledger("investigations", "evidence", inv, "--output", str(evidence), env=env)
    assert made.returncode == 0, made.stderr
    svc = build_services(settings)  # the public key, as GET /v1/checkpoints/key serves it
    try:
        assert svc.tlog is not None and svc.tlog.identity is not None
        log_key = svc.tlog.identity.verifier_key("default")
    finally:
        svc.writer.stop()
        svc.store.close()
    checked = phi_ledger("verify-proof", str(evidence), "--key", log_key)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("OK: 4 entries")

    closed = phi_ledger("investigations", "close", inv, "--outcome", "breach", "--nature",
                        "names", "--recipient", "unknown", "--mitigation", "wiped", env=env)
    assert closed.returncode == 0, closed.stderr
    listed = json.loads(phi_ledger("investigations", "list", env=env).stdout)
    assert [i["status"] for i in listed] == ["closed"]

    entries = [json.loads(line) for line in phi_ledger("export", env=env).stdout.splitlines()]
    reads = [e["event"] for e in entries if e["event"]["action"] == "query"]
    # three patients shown by `show` (json) and three again by `show --format html`
    # (--as names the reader; without it, the login name)
    assert len(reads) == 6
    assert {r["actor"]["id"] for r in reads} == {"cli:rita", f"cli:{getpass.getuser()}"}

    before = len(entries)
    bad = phi_ledger("investigations", "open", "--title", "x", "--discovered-at", "soon",
                     "--from", "2026-11-24T00:00:00Z", "--device", "d", env=env)
    assert bad.returncode == 2 and "discovered_at" in bad.stderr
    assert len(phi_ledger("export", env=env).stdout.splitlines()) == before


def _entries(env: dict[str, str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in phi_ledger("export", env=env).stdout.splitlines()]


def test_amend_widens_the_scope_and_close_keeps_its_note_with_the_cli(
        settings: Settings) -> None:
    _seed(settings)
    env = db_env(settings)
    opened = phi_ledger("investigations", "open", "--title", "Stolen laptop",
                        "--discovered-at", "2026-11-26T09:00:00-05:00",
                        "--from", "2026-11-24T00:00:00Z", "--actor", "nobody", env=env)
    assert opened.returncode == 0, opened.stdout + opened.stderr
    inv = opened.stdout.strip().splitlines()[-1]

    def show() -> dict[str, Any]:
        shown = phi_ledger("investigations", "show", inv, "--purpose", "HOPERAT", env=env)
        assert shown.returncode == 0, shown.stderr
        return dict(json.loads(shown.stdout))

    assert show()["timeline"] == []

    before = len(_entries(env))
    empty = phi_ledger("investigations", "amend", inv, env=env)
    assert empty.returncode == 2 and "scope change or a note" in empty.stderr
    backwards = phi_ledger("investigations", "amend", inv, "--from", "yesterday", env=env)
    assert backwards.returncode == 2 and "scope.from" in backwards.stderr
    assert len(_entries(env)) == before  # refused amendments write nothing

    amended = phi_ledger("investigations", "amend", inv, "--device", "ws-stolen", "--ip",
                         str(THIEF["ip"]), "--note", "MDM: last seen on the VPN", "--as", "rita",
                         env=env)
    assert amended.returncode == 0, amended.stdout + amended.stderr
    seq = int(amended.stdout.split()[-1])
    entry = next(e for e in _entries(env) if e["seq"] == seq)
    assert entry["event"]["action"] == "investigation_amended"
    assert entry["event"]["actor"]["id"] == "cli:rita"
    assert entry["event"]["data"] == {"scope.devices": ["ws-stolen"],
                                      "scope.ips": [str(THIEF["ip"])],
                                      "note": "MDM: last seen on the VPN"}
    body = show()
    assert body["investigation"]["scope"]["devices"] == ["ws-stolen"]
    assert body["investigation"]["scope"]["actors"] == ["nobody"]  # lists not named stay
    assert [i["action"] for i in body["timeline"]] == ["login", "read", "export", "read"]
    assert [n["note"] for n in body["investigation"]["notes"]] == ["MDM: last seen on the VPN"]

    closed = phi_ledger("investigations", "close", inv, "--outcome", "not_a_breach",
                        "--nature", "names", "--recipient", "nobody", "--mitigation",
                        "recovered sealed", "--not-acquired", "--note", "laptop recovered",
                        env=env)
    assert closed.returncode == 0, closed.stdout + closed.stderr
    seq = int(closed.stdout.split()[-1])
    data = next(e for e in _entries(env) if e["seq"] == seq)["event"]["data"]
    assert data["note"] == "laptop recovered" and data["outcome"] == "not_a_breach"
    assert data["risk.acquired_or_viewed"] is False  # the investigator's answer...
    assert data["risk.acquired_or_viewed.from_ledger"] is True  # ...beside the ledger's
    listed = json.loads(phi_ledger("investigations", "list", env=env).stdout)
    assert [n["note"] for n in listed[0]["notes"]] == ["MDM: last seen on the VPN",
                                                       "laptop recovered"]

    before = len(_entries(env))
    late = phi_ledger("investigations", "amend", inv, "--note", "late", env=env)
    assert late.returncode == 2 and "closed" in late.stderr
    assert len(_entries(env)) == before
