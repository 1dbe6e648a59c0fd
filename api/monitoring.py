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
* **Several watches.** ``serve`` (inline projections) and ``phi-ledger project`` each run
  one: the rule-set entry's event id is fixed per ledger and rule set (a second append is
  refused as a replay), and alerts are claimed for the webhook by compare-and-set on
  ``alert_webhook_sent``, so each is recorded or sent once.
"""

from __future__ import annotations

import json
import queue
import threading
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import structlog

from ledger.admission import Pending
from ledger.attestation import BY_SERVICE
from ledger.store.base import LedgerStore, StoreUnavailable
from projections.alerts import RULES_RECORDED
from projections.monitoring.rules import RULES, RULESET_VERSION, ruleset_digest

log = structlog.get_logger(__name__)

QUEUE_LIMIT: Final = 1000
BATCH_LIMIT: Final = 100
CLAIM_LIMIT: Final = 1000
RETRIES: Final = 4
BACKOFF: Final = 0.5  # seconds, doubled at each retry
RULE_SET_NAMESPACE: Final = uuid.UUID("5d3c8b1e-7f0a-4c59-9a41-2f6e0b7d9c13")


def rule_set_event_id(ledger: str, digest: str) -> str:
    """The rule-set entry's event id: the same in every process for one ledger and rule
    set, so when two watches (``serve`` and ``phi-ledger project``) append it at once the
    store takes the first and refuses the second as a replay of that id: one entry."""
    return str(uuid.uuid5(RULE_SET_NAMESPACE, f"{ledger}\x1e{digest}"))


def rule_set_event(now: datetime, ledger: str = "default") -> dict[str, Any]:
    """The system entry that names the rule set in force."""
    return {
        "event_id": rule_set_event_id(ledger, ruleset_digest()),
        "occurred_at": now.isoformat(timespec="microseconds"),
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
        event = rule_set_event(clock(), ledger)
        pending = Pending(event["event_id"], protection.fingerprint(ledger, event), event,
                          BY_SERVICE.members())
        # Conflicted: another watch appended this rule set's entry first; nothing to add.
        store.append({ledger: [[pending]]}, clock())
        recorded.add(ledger)
        done.append(ledger)
    return done


def new_alerts(store: LedgerStore, ledger: str, after: int
               ) -> list[tuple[str, str, str, int]]:
    """``(ledger, alert_id, rule, seq)`` of up to ~1000 alerts raised after seq ``after``,
    whole entries only (an entry's alerts are never split between two claims)."""
    with store.reading() as curs:
        curs.execute(store.sql(
            "SELECT alert_id, rule, seq FROM view_alerts WHERE ledger = %s AND seq > %s"
            " ORDER BY seq, alert_id LIMIT %s"), (ledger, after, CLAIM_LIMIT))
        rows = [(ledger, str(a), str(r), int(s)) for a, r, s in curs.fetchall()]
    if len(rows) == CLAIM_LIMIT and rows[0][3] != rows[-1][3]:
        rows = [row for row in rows if row[3] != rows[-1][3]]
    return rows


def newest_seqs(store: LedgerStore) -> dict[str, int]:
    with store.reading() as curs:
        curs.execute("SELECT ledger, MAX(seq) FROM view_alerts GROUP BY ledger")
        return {str(ledger): int(seq) for ledger, seq in curs.fetchall()}


def claimed(store: LedgerStore) -> dict[str, int]:
    """Per ledger, the newest alert seq already handed to a webhook (by any process)."""
    with store.reading() as curs:
        curs.execute("SELECT ledger, seq FROM alert_webhook_sent")
        return {str(ledger): int(seq) for ledger, seq in curs.fetchall()}


def start_claims(store: LedgerStore, seqs: dict[str, int]) -> None:
    """Ledgers no process has sent for yet start at ``seqs`` (what exists is not sent);
    a ledger some process already started keeps its claim."""
    with store.transaction() as tx:
        for ledger, seq in sorted(seqs.items()):
            store.execute(tx, "INSERT INTO alert_webhook_sent (ledger, seq) VALUES (%s, %s)"
                          " ON CONFLICT (ledger) DO NOTHING", (ledger, seq))


def claim(store: LedgerStore, ledger: str, after: int, upto: int) -> bool:
    """Move ``ledger``'s claim from ``after`` to ``upto``; False when another process
    moved it first (then those alerts are theirs to send). Compare-and-set: each alert
    is handed to one webhook sender, however many watches run."""
    with store.transaction() as tx:
        cursor = store.execute(tx, "UPDATE alert_webhook_sent SET seq = %s"
                               " WHERE ledger = %s AND seq = %s", (upto, ledger, after))
        return bool(cursor.rowcount == 1)


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
    """Runs beside the projector (in ``serve`` and in ``phi-ledger project``): records
    rule sets, feeds the webhook. Several watches may run on one database: the rule-set
    entry has one event id per ledger and rule set, and alerts are claimed for the
    webhook by compare-and-set, so each is recorded and sent once."""

    def __init__(self, store: LedgerStore, protection: Any, clock: Callable[[], datetime],
                 webhook: Webhook | None = None, poll: float = 0.5) -> None:
        self.store, self.protection, self.clock = store, protection, clock
        self.webhook, self.poll = webhook, poll
        self._recorded: set[str] = set()
        self._started = False

    def step(self) -> None:
        record_rule_sets(self.store, self.protection, self.clock, self._recorded)
        if self.webhook is None:
            return
        newest = newest_seqs(self.store)
        if not self._started:
            # Only alerts raised from now on, for ledgers no watch has sent for yet.
            start_claims(self.store, newest)
            self._started = True
            return
        start_claims(self.store, {ledger: 0 for ledger in newest})  # ledgers new since
        for ledger, after in sorted(claimed(self.store).items()):
            if newest.get(ledger, 0) <= after:
                continue
            found = new_alerts(self.store, ledger, after)
            if found and claim(self.store, ledger, after, found[-1][3]):
                for _ledger, alert_id, rule, _seq in found:
                    self.webhook.offer(ledger, alert_id, rule)

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
