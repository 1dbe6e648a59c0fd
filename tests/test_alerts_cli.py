"""``phi-ledger alerts`` and ``phi-ledger rebuild alerts`` as an operator runs them (a real
process configured by environment), on SQLite and PostgreSQL."""

from __future__ import annotations

from api.app import build_services
from ledger.settings import Settings
from tests.monitoring_support import alerts, at, post, read
from tests.test_tamper import run_cli


def test_alerts_lists_filters_without_phi_and_survives_a_rebuild(settings: Settings) -> None:
    svc = build_services(settings)
    try:
        seqs = post(svc, [read("MRN-4242", at(1), purpose="ETREAT"),
                          read("MRN-4242", at(2)) | {"channel": "ehr"}])
        before = alerts(svc)
    finally:
        svc.writer.stop()
        svc.store.close()
    listed = run_cli(settings, "alerts")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert lines[0].startswith("alert_id\trule")
    assert [line.split("\t")[:4] for line in lines[1:]] == [
        [f"{seqs[0]}-break_glass", "break_glass", "medium", "open"]]
    assert "MRN-4242" not in listed.stdout
    assert run_cli(settings, "alerts", "--status", "dismissed").stdout.strip().count("\n") == 0
    assert run_cli(settings, "alerts", "--rule", "bogus").returncode != 0
    rebuilt = run_cli(settings, "rebuild", "alerts")
    assert rebuilt.returncode == 0, rebuilt.stderr
    svc = build_services(settings)
    try:
        assert alerts(svc) == before
    finally:
        svc.writer.stop()
        svc.store.close()


def test_demo_writes_ground_truth_apart_from_the_ledger(settings: Settings, tmp_path) -> None:
    import json

    truth = tmp_path / "truth.jsonl"
    done = run_cli(settings, "demo", "--events", "3000", "--truth", str(truth))
    assert done.returncode == 0, done.stderr
    labels = [json.loads(line) for line in truth.read_text().splitlines()]
    assert {"untrained", "no_mfa", "insecure_channel"} <= {x["rule"] for x in labels}
    exported = run_cli(settings, "export").stdout
    assert "insecure_channel" not in exported and "explained_by" not in exported


def test_the_plain_demo_raises_alerts(settings: Settings) -> None:
    """A newcomer's ``phi-ledger demo`` (no --truth) carries the data conventions, so the
    rules that need a roster, names or VIP records fire."""
    done = run_cli(settings, "demo", "--events", "3000")
    assert done.returncode == 0, done.stderr
    assert run_cli(settings, "project", "--once").returncode == 0
    listed = run_cli(settings, "alerts")
    assert listed.returncode == 0, listed.stderr
    rules = {line.split("\t")[1] for line in listed.stdout.strip().splitlines()[1:]}
    # not_on_roster, untrained, same_last_name, vip_access need roster, names, VIP flags.
    assert {"untrained", "same_last_name", "vip_access", "not_on_roster"} <= rules, rules
