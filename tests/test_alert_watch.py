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
