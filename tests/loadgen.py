"""Load generation and whole-ledger checks for the concurrency, crash and outage tests.

Clients here behave as a well-made application would: each event has its own
``event_id`` and is re-posted with the *same* body until a receipt comes back, through
connection errors and 503s alike. The checks read the ledger back (over HTTP or straight
from the store) and recompute every hash independently of the product's chain code.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support import ROOT, free_port, make_event

GENESIS = "0" * 64
RECEIPT_KEYS = {"event_id", "ledger", "seq", "hash", "prev_hash", "recorded_at"}
_serial = itertools.count(1)


def tagged_event(tag: str, **overrides: Any) -> dict[str, Any]:
    """A fresh event whose ``resource.id`` (never encrypted) names who posted it, so the
    stored entry can be matched to the posted body even once PHI is encrypted at rest."""
    resource = {"type": "message", "id": f"{tag}-{next(_serial)}", "phi": ["name", "phone"]}
    return make_event(resource=resource, **overrides)


@dataclass
class Collector:
    """What many client threads posted and were told, gathered under one lock."""

    posted: dict[str, dict[str, Any]] = field(default_factory=dict)
    receipts: dict[str, dict[str, Any]] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def will_post(self, event: dict[str, Any]) -> None:
        """Record an event *before* its first attempt: it may commit even if no receipt
        ever reaches the client."""
        with self.lock:
            self.posted[event["event_id"]] = event

    def acknowledged(self, event: dict[str, Any], status: int, receipt: dict[str, Any]) -> None:
        problems = check_receipt(event, receipt)
        with self.lock:
            self.statuses[status] += 1
            first = self.receipts.setdefault(event["event_id"], receipt)
            if first != receipt:
                problems.append(
                    f"event {event['event_id']}: second receipt {receipt} differs from "
                    f"first {first}"
                )
            self.errors.extend(problems)

    def saw(self, status: int) -> None:
        with self.lock:
            self.statuses[status] += 1

    def transport_error(self) -> None:
        with self.lock:
            self.transport_errors += 1

    def failed(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)

    @property
    def acked(self) -> int:
        with self.lock:
            return len(self.receipts)


def check_receipt(event: dict[str, Any], receipt: Any) -> list[str]:
    if not isinstance(receipt, dict) or set(receipt) != RECEIPT_KEYS:
        return [f"malformed receipt for {event['event_id']}: {receipt!r}"]
    if receipt["event_id"] != event["event_id"]:
        return [f"receipt for {receipt['event_id']} answers {event['event_id']}"]
    return []


class Unexpected(AssertionError):
    """The service answered something a client must never get here."""


def post_until_receipt(
    client: httpx.Client,
    event: dict[str, Any],
    collector: Collector,
    *,
    deadline: float,
    retry_delay: float = 0.05,
) -> tuple[int, dict[str, Any]]:
    """Post ``event`` (same body, same event_id) until a receipt comes back.

    Connection errors and 503 are retried; anything but 200/201/503 raises
    :class:`Unexpected`; running past ``deadline`` (monotonic) raises TimeoutError.
    """
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no receipt for {event['event_id']} before the deadline")
        try:
            response = client.post("/v1/events", json=event)
        except httpx.TransportError:
            collector.transport_error()
            time.sleep(retry_delay)
            continue
        if response.status_code in (200, 201):
            receipt = response.json()
            collector.acknowledged(event, response.status_code, receipt)
            return response.status_code, receipt
        collector.saw(response.status_code)
        if response.status_code == 503:
            if "retry-after" not in response.headers:
                raise Unexpected("503 without Retry-After")
            time.sleep(retry_delay)
            continue
        raise Unexpected(f"{response.status_code}: {response.text[:500]}")


def run_threads(
    targets: Iterable[Callable[[], None]], collector: Collector, timeout: float
) -> None:
    """Run each target in its own thread; exceptions land in ``collector.errors``.
    Fails if a thread is still running after ``timeout`` seconds."""

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException:
                collector.failed(traceback.format_exc())

        return run

    threads = [threading.Thread(target=guarded(t), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"client threads still running after {timeout}s: {stuck}"


# -- reading the ledger back ---------------------------------------------------------------


def entries_over_http(client: httpx.Client, ledger: str = "default") -> list[dict[str, Any]]:
    """Every entry of ``ledger``, paging GET /v1/ledger/entries to the end."""
    entries: list[dict[str, Any]] = []
    after: int | None = 0
    for _ in range(10_000):
        response = client.get(
            "/v1/ledger/entries", params={"after": after, "limit": 5000, "ledger": ledger}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        entries.extend(page["entries"])
        after = page["next_after"]
        if after is None:
            return entries
    raise AssertionError("GET /v1/ledger/entries never reached the end")


def entries_from_store(database_url: str, ledger: str = "default") -> list[dict[str, Any]]:
    """Every entry of ``ledger`` read straight from the database (no service involved)."""
    from ledger.store import open_store

    store = open_store(database_url)
    try:
        return [json.loads(data) for _, data in store.stream(ledger)]
    finally:
        store.close()


def independent_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256(0x00 || RFC 8785 of the entry without ``hash``), written without the
    product's code (sorted keys and compact separators are RFC 8785 for ASCII keys,
    integers and strings, which is all an event holds)."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(b"\x00" + text.encode("utf-8")).hexdigest()


def check_ledger(
    entries: list[dict[str, Any]],
    collector: Collector,
    *,
    ledger: str = "default",
) -> None:
    """The invariants every test here ends with.

    - seqs are exactly 1..N, each link's prev_hash is the hash before it, every hash
      recomputes (no gap, no fork, nothing altered);
    - no event_id appears twice, and the ledger holds exactly the posted events;
    - every receipt points at its event, at its seq, with its hash and prev_hash;
    - each stored event is the body that was posted under its event_id.
    """
    seqs = [e["seq"] for e in entries]
    assert seqs == list(range(1, len(entries) + 1)), "seqs are not exactly 1..N"
    prev = GENESIS
    for entry in entries:
        assert entry["ledger"] == ledger, f"seq {entry['seq']} is in ledger {entry['ledger']}"
        assert entry["prev_hash"] == prev, f"fork or gap at seq {entry['seq']}"
        assert independent_hash(entry) == entry["hash"], f"seq {entry['seq']} does not rehash"
        prev = entry["hash"]

    ids = Counter(e["event"]["event_id"] for e in entries)
    twice = sorted(k for k, n in ids.items() if n > 1)
    assert not twice, f"{len(twice)} event_ids appear more than once, e.g. {twice[:3]}"
    missing = sorted(set(collector.posted) - set(ids))
    extra = sorted(set(ids) - set(collector.posted))
    assert not missing, f"{len(missing)} posted events are not in the ledger: {missing[:3]}"
    assert not extra, f"{len(extra)} entries were never posted: {extra[:3]}"

    for entry in entries:
        stored = entry["event"]
        posted = collector.posted[stored["event_id"]]
        assert stored["resource"] == posted["resource"], (
            f"seq {entry['seq']} holds another body than was posted for {stored['event_id']}"
        )

    for event_id, receipt in collector.receipts.items():
        seq = receipt["seq"]
        assert 1 <= seq <= len(entries), f"receipt for {event_id} points past the head: {seq}"
        entry = entries[seq - 1]
        assert entry["event"]["event_id"] == event_id, (
            f"receipt for {event_id} says seq {seq}, which holds {entry['event']['event_id']}"
        )
        for key in ("hash", "prev_hash", "recorded_at", "ledger"):
            assert entry[key] == receipt[key], f"receipt for {event_id}: {key} differs"


def run_verify_cli(env: Mapping[str, str], timeout: float = 60) -> str:
    """``phi-ledger verify`` as an auditor runs it; returns its stdout, fails on exit != 0."""
    import os

    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "verify"],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"verify exited {done.returncode}: {done.stdout}{done.stderr}"
    return done.stdout


def fixed_port() -> int:
    """A port a server can be restarted on (see ``tests.support.free_port``)."""
    return free_port()


def log_tail(path: Any, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.05) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
