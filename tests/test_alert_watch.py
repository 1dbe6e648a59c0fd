"""The monitoring shell: the rule set recorded in the ledger once alerts exist, and the
webhook (ids and rule codes only, retried, bounded) against a real local HTTP server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

from api.monitoring import Watch, Webhook, record_rule_sets
from ledger.clock import utc_now
from projections.monitoring.rules import RULESET_VERSION, ruleset_digest
from tests.monitoring_support import alerts, at, post, read


def _entries(svc: Any, ledger: str = "default") -> list[dict[str, Any]]:
    from ledger.canonical import parse

    return [parse(stored)["event"] for _, stored in svc.store.notifications(0, 10_000)
            if parse(stored)["ledger"] == ledger]


def test_rule_set_recorded_once_after_the_first_alert(svc: Any) -> None:
    recorded: set[str] = set()
    post(svc, [read("MRN-1", at(1))])
    alerts(svc)
    assert record_rule_sets(svc.store, svc.protection, utc_now, recorded) == []  # no alert
    post(svc, [read("MRN-1", at(2), purpose="ETREAT")])
    alerts(svc)
    assert record_rule_sets(svc.store, svc.protection, utc_now, recorded) == ["default"]
    alerts(svc)  # the view sees the entry: not again, even from a fresh process
    assert record_rule_sets(svc.store, svc.protection, utc_now, set()) == []
    named = [e for e in _entries(svc) if e["action"] == "monitoring_rules"]
    assert len(named) == 1
    assert named[0]["data"]["version"] == RULESET_VERSION
    assert named[0]["data"]["digest"] == ruleset_digest()
    assert [a["rule"] for a in alerts(svc)] == ["break_glass"]  # the entry raises nothing


class _Receiver(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if _Receiver.fail_first > 0:
            _Receiver.fail_first -= 1
            self.send_response(503)
        else:
            _Receiver.bodies.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_webhook_gets_ids_and_rules_only_with_retries(svc: Any) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.bodies, _Receiver.fail_first = [], 2
    hook = Webhook(f"http://127.0.0.1:{server.server_port}/hook",
                   sleep=lambda _seconds: False)
    watch = Watch(svc.store, svc.protection, utc_now, hook)
    stop = threading.Event()
    try:
        watch.step()  # starts from what exists now
        post(svc, [read("MRN-7", at(1), purpose="ETREAT")])
        alerts(svc)
        watch.step()
        stop.set()
        hook.deliver(stop)
    finally:
        server.shutdown()
    sent = [a for body in _Receiver.bodies for a in body["alerts"]]
    assert sent == [{"ledger": "default", "alert_id": "1-break_glass", "rule": "break_glass"}]
    assert "MRN-7" not in json.dumps(_Receiver.bodies)
    assert hook.sent == 1 and hook.failed == 0


def test_webhook_queue_is_bounded_dropping_the_oldest() -> None:
    hook = Webhook("http://127.0.0.1:9/never", limit=3)
    for i in range(5):
        hook.offer("default", f"{i}-no_mfa", "no_mfa")
    assert hook.dropped == 2
    kept = [hook.waiting.get_nowait()["alert_id"] for _ in range(3)]
    assert kept == ["2-no_mfa", "3-no_mfa", "4-no_mfa"]


def test_webhook_gives_up_after_its_retries() -> None:
    calls: list[int] = []

    def refuse(_url: str, _body: dict[str, Any]) -> None:
        calls.append(1)
        raise OSError("down")

    hook = Webhook("http://127.0.0.1:9/never", send=refuse, sleep=lambda _s: False)
    hook.offer("default", "1-no_mfa", "no_mfa")
    stop = threading.Event()
    stop.set()
    hook.deliver(stop)
    assert len(calls) == 4 and hook.failed == 1 and hook.sent == 0


def test_two_watches_record_the_rule_set_once(svc: Any) -> None:
    """``serve`` and ``phi-ledger project`` both watching, before the view has seen the
    entry either of them wrote: the rule-set entry's one event id keeps it to one."""
    post(svc, [read("MRN-1", at(1), purpose="ETREAT")])
    alerts(svc)
    first = record_rule_sets(svc.store, svc.protection, utc_now, set())
    second = record_rule_sets(svc.store, svc.protection, utc_now, set())  # another process
    assert first == second == ["default"]  # both tried, ...
    assert [e["action"] for e in _entries(svc)].count("monitoring_rules") == 1  # ... one entry


def test_two_watches_send_each_alert_once(svc: Any) -> None:
    """Two watches on one database, each with its own webhook queue: every alert raised
    after they started lands in exactly one queue; what existed before, in none."""
    post(svc, [read("MRN-1", at(1), purpose="ETREAT")])  # before: never sent
    alerts(svc)
    hooks = [Webhook("http://127.0.0.1:9/a"), Webhook("http://127.0.0.1:9/b")]
    watches = [Watch(svc.store, svc.protection, utc_now, hook) for hook in hooks]
    for watch in watches:
        watch.step()
    for i in range(3):
        post(svc, [read(f"MRN-{i + 2}", at(10 + i), purpose="ETREAT")])
        post(svc, [read("MRN-9", at(20 + i), purpose="ETREAT")], ledger="other")
        alerts(svc)
        alerts(svc, "other")
        for watch in (watches if i % 2 else reversed(watches)):
            watch.step()
    sent = [(item["ledger"], item["alert_id"]) for hook in hooks
            for item in list(hook.waiting.queue)]
    raised = [("default", a["alert_id"]) for a in alerts(svc)][1:] + [
        ("other", a["alert_id"]) for a in alerts(svc, "other")]
    assert sorted(sent) == sorted(raised) and len(raised) == 6
    assert all(hook.waiting.qsize() > 0 for hook in hooks)  # both took part


def test_a_claim_is_taken_by_one_watch(svc: Any) -> None:
    """Two watches that read the same claim at once: the compare-and-set lets one move
    it; the other's alerts are not offered twice."""
    from api.monitoring import claim, start_claims

    start_claims(svc.store, {"default": 4})
    assert claim(svc.store, "default", 4, 9) is True
    assert claim(svc.store, "default", 4, 9) is False  # the second reader of seq 4
    assert _claims(svc) == {"default": 9}
    start_claims(svc.store, {"default": 0})  # a ledger already started keeps its claim
    assert _claims(svc) == {"default": 9}


def test_phi_ledger_project_runs_the_watch(settings: Any) -> None:
    """The production split: views and monitoring in a separate ``phi-ledger project``
    process. It records the rule set in the ledger and sends new alerts to the webhook."""
    import subprocess
    import sys
    import time

    from api.app import build_services
    from tests.support import ROOT
    from tests.test_tamper import cli_env

    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.bodies, _Receiver.fail_first = [], 0
    svc = build_services(settings)
    env = cli_env(settings) | {
        "LEDGER_ALERT_WEBHOOK": f"http://127.0.0.1:{server.server_port}/hook",
        "LEDGER_PROJECTIONS": "off"}
    proc = None
    try:
        post(svc, [read("MRN-1", at(1), purpose="ETREAT")])  # raised before it starts
        proc = subprocess.Popen([sys.executable, "-m", "api.cli", "project"], cwd=ROOT,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def wait_for(done: Any) -> None:
            deadline = time.monotonic() + 60  # a bound on failure only
            while not done():
                assert proc is not None and proc.poll() is None, proc and proc.stderr
                assert time.monotonic() < deadline, "phi-ledger project did not get there"
                time.sleep(0.1)

        # The watch has started once the rule set for the existing alert is in the ledger
        # and its claim on the ledger's alerts is made (the existing one: not sent).
        wait_for(lambda: "monitoring_rules" in [e["action"] for e in _entries(svc)])
        wait_for(lambda: _claims(svc) == {"default": 1})
        seqs = post(svc, [read("MRN-2", at(2), purpose="ETREAT")])
        wait_for(lambda: bool(_Receiver.bodies))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        server.shutdown()
        svc.writer.stop()
        svc.store.close()
    sent = [a for body in _Receiver.bodies for a in body["alerts"]]
    assert sent == [{"ledger": "default", "alert_id": f"{seqs[0]}-break_glass",
                     "rule": "break_glass"}]
    assert proc.returncode == 0


def _claims(svc: Any) -> dict[str, int]:
    from api.monitoring import claimed

    return claimed(svc.store)
