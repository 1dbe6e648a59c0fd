"""The shell around continual monitoring: what the alerts view cannot do from inside a
projection -- write to the ledger, call out, count for Prometheus.

* **Rule versions.** Once a ledger has its first alert under the running rule set, the
  service appends a ``monitoring_rules`` system entry naming the set's version, digest and
  rule codes, so a reviewer can tell later which rules were in force.
* **Webhook.** With ``LEDGER_ALERT_WEBHOOK`` set, new alerts are POSTed there as
  ``{"alerts": [{"ledger", "alert_id", "rule"}]}``: ids and rule codes only, never PHI
  (the receiver reads the rest through ``GET /v1/alerts``, which records the read). A
  bounded queue holds what waits to be sent (the oldest is dropped and counted when it is
  full); each POST is retried with backoff.
"""

from __future__ import annotations

import json
import queue
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import structlog

from ledger.admission import Pending
from ledger.attestation import BY_SERVICE
from ledger.event_ids import new_event_id
from ledger.store.base import LedgerStore, StoreUnavailable
from projections.alerts import RULES_RECORDED
from projections.monitoring.rules import RULES, RULESET_VERSION, ruleset_digest

log = structlog.get_logger(__name__)

QUEUE_LIMIT: Final = 1000
BATCH_LIMIT: Final = 100
RETRIES: Final = 4
BACKOFF: Final = 0.5  # seconds, doubled at each retry


def rule_set_event(now: datetime) -> dict[str, Any]:
    """The system entry that names the rule set in force."""
    return {
        "event_id": new_event_id(), "occurred_at": now.isoformat(timespec="microseconds"),
        "action": RULES_RECORDED, "outcome": "success",
        "actor": {"id": "phi-ledger", "kind": "system"},
        "resource": {"type": "rule_set", "id": RULESET_VERSION},
        "data": {"version": RULESET_VERSION, "digest": ruleset_digest(),
                 "rules": ",".join(RULES)},
        "source": {"system": "phi-ledger"},
    }


def ledgers_to_record(store: LedgerStore, digest: str) -> list[str]:
    """Ledgers with an alert under rule set ``digest`` and no entry naming it yet."""
    with store.reading() as curs:
        curs.execute(store.sql(
            "SELECT a.ledger FROM monitor_state a WHERE a.key = %s AND NOT EXISTS"
            " (SELECT 1 FROM monitor_state r WHERE r.ledger = a.ledger AND r.key = %s)"
            " ORDER BY a.ledger"), (f"alerted\x1e{digest}", f"ruleset\x1e{digest}"))
        return [str(row[0]) for row in curs.fetchall()]


def record_rule_sets(store: LedgerStore, protection: Any, clock: Callable[[], datetime],
                     recorded: set[str]) -> list[str]:
    """Append the rule-set entry to each ledger that needs one (``recorded``: ledgers
    this process already wrote it to, while the view has not caught up); returns them."""
    digest = ruleset_digest()
    done = []
    for ledger in ledgers_to_record(store, digest):
        if ledger in recorded:
            continue
        event = rule_set_event(clock())
        pending = Pending(event["event_id"], protection.fingerprint(ledger, event), event,
                          BY_SERVICE.members())
        store.append({ledger: [[pending]]}, clock())
        recorded.add(ledger)
        done.append(ledger)
    return done


def new_alerts(store: LedgerStore, after: dict[str, int]) -> list[tuple[str, str, str, int]]:
    """``(ledger, alert_id, rule, seq)`` of the alerts raised after ``after[ledger]`` (every
    ledger not named: after its newest seen so far, i.e. none)."""
    out = []
    with store.reading() as curs:
        for ledger, seq in sorted(after.items()):
            curs.execute(store.sql(
                "SELECT alert_id, rule, seq FROM view_alerts WHERE ledger = %s AND seq > %s"
                " ORDER BY seq, alert_id LIMIT 1000"), (ledger, seq))
            out += [(ledger, str(a), str(r), int(s)) for a, r, s in curs.fetchall()]
    return out


def newest_seqs(store: LedgerStore) -> dict[str, int]:
    with store.reading() as curs:
        curs.execute("SELECT ledger, MAX(seq) FROM view_alerts GROUP BY ledger")
        return {str(ledger): int(seq) for ledger, seq in curs.fetchall()}


def post_json(url: str, body: dict[str, Any], timeout: float = 5.0) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        if not 200 <= answer.status < 300:
            raise OSError(f"webhook answered {answer.status}")


@dataclass
class Webhook:
    """Sends alert ids and rule codes to ``url``: a bounded queue, retries with backoff.
    Guarantees: nothing but ``ledger``, ``alert_id`` and ``rule`` leaves the service."""

    url: str
    send: Callable[[str, dict[str, Any]], None] = post_json
    sleep: Callable[[float], bool] | None = None  # waits; True when asked to stop
    limit: int = QUEUE_LIMIT
    dropped: int = 0
    sent: int = 0
    failed: int = 0
    waiting: queue.Queue[dict[str, str]] = field(init=False)

    def __post_init__(self) -> None:
        self.waiting = queue.Queue(maxsize=self.limit)

    def offer(self, ledger: str, alert_id: str, rule: str) -> None:
        item = {"ledger": ledger, "alert_id": alert_id, "rule": rule}
        while True:
            try:
                self.waiting.put_nowait(item)
                return
            except queue.Full:
                try:
                    self.waiting.get_nowait()  # the oldest goes: the newest matter most
                    self.dropped += 1
                except queue.Empty:
                    pass

    def deliver(self, stop: threading.Event) -> None:
        """Send what waits, in batches, until ``stop`` is set and the queue is empty."""
        wait = self.sleep or stop.wait
        while not (stop.is_set() and self.waiting.empty()):
            try:
                first = self.waiting.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < BATCH_LIMIT:
                try:
                    batch.append(self.waiting.get_nowait())
                except queue.Empty:
                    break
            delay = BACKOFF
            for attempt in range(RETRIES):
                try:
                    self.send(self.url, {"alerts": batch})
                    self.sent += len(batch)
                    break
                except OSError as error:
                    log.warning("alert_webhook_failed", attempt=attempt + 1,
                                error=type(error).__name__)
                    if attempt + 1 < RETRIES and wait(delay) and stop.is_set():
                        break
                    delay *= 2
            else:
                self.failed += len(batch)


class Watch:
    """Runs beside the projector: records rule sets, feeds the webhook."""

    def __init__(self, store: LedgerStore, protection: Any, clock: Callable[[], datetime],
                 webhook: Webhook | None = None, poll: float = 0.5) -> None:
        self.store, self.protection, self.clock = store, protection, clock
        self.webhook, self.poll = webhook, poll
        self._recorded: set[str] = set()
        self._after: dict[str, int] | None = None

    def step(self) -> None:
        record_rule_sets(self.store, self.protection, self.clock, self._recorded)
        if self.webhook is None:
            return
        if self._after is None:
            self._after = newest_seqs(self.store)  # only alerts raised from now on
            return
        for ledger in newest_seqs(self.store):
            self._after.setdefault(ledger, 0)
        for ledger, alert_id, rule, seq in new_alerts(self.store, self._after):
            self.webhook.offer(ledger, alert_id, rule)
            self._after[ledger] = max(self._after[ledger], seq)

    def run(self, stop: threading.Event) -> None:
        sender = None
        if self.webhook is not None:
            sender = threading.Thread(target=self.webhook.deliver, args=(stop,),
                                      name="alert-webhook", daemon=True)
            sender.start()
        while not stop.is_set():
            try:
                self.step()
            except StoreUnavailable:
                log.warning("monitoring_watch_paused", reason="database unavailable")
            stop.wait(self.poll)
        if sender is not None:
            sender.join(timeout=10)
