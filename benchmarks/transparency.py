"""Transparency benchmark on PostgreSQL (fsync on).

    .venv/bin/python -m benchmarks.transparency [--entries 10000000] [--rate 2000]

Prints, each with its target:
- what maintaining the Merkle tree costs ingest: the same appends with and without it
  (``LEDGER_UNSAFE_NO_TREE``), through the store alone (the strictest ratio: no HTTP, no
  encryption around it) and through the batch endpoint as ``benchmarks.ingest`` measures
  it (1,000 events a request, encrypted, 2 workers); runs alternate, best of each;
- proof latency on a ledger of ``--entries`` entries: inclusion and consistency proofs
  for random entries and sizes, in the service (``TransparencyLog``) and over HTTP
  (``GET /v1/proofs/...``, one keep-alive client), p50 and p99; bundles over HTTP;
- from a receipt to a signed checkpoint covering it, under a steady ``--rate`` single
  POSTs a second (2 workers, the default 1 s interval): a poller reads
  ``/v1/checkpoints/latest`` every 10 ms; p50, p99 and max over every event;
- ``phi-ledger verify`` over the long ledger, now that it recomputes the tree too.

Each part starts its own servers on fresh databases and drops them afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import orjson
import uvloop

from benchmarks.host import describe as describe_host
from benchmarks.httpload import post_request, read_response, run_load
from benchmarks.ingest import ROOT, line, workload
from benchmarks.support import ServerProcess, create_pg_database, drop_pg_database, provision_key
from ledger.admission import Pending
from ledger.migrate import migrate
from ledger.settings import Settings
from ledger.store import open_store
from ledger.tlog import TransparencyLog, load_log_identity
from ledger.transparency.checkpoint import Checkpoint
from ledger.transparency.note import Note
from ledger.transparency.proof import verify_consistency, verify_inclusion

LEDGER = "default"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def server(url: str, tmp: Path, key: str, workers: int, **env: str) -> ServerProcess:
    base = {"LEDGER_DATABASE_URL": url, "LEDGER_KEY_FILE": str(tmp / f"keys-{url[-8:]}.json"),
            "LEDGER_LOG_LEVEL": "warning"}
    return ServerProcess(base | env, args=("--workers", str(workers)), api_key=key)


# -- what the tree costs ingest ---------------------------------------------------------------


def append_rate(events: list[dict], tree: bool, group: int = 5000) -> float:
    """Events a second appended through the store, ``group`` a transaction."""
    url = create_pg_database()
    try:
        migrate(url)
        store = open_store(url, maintain_tree=tree)
        groups = []
        for start in range(0, len(events), group):
            chunk = [dict(e, event_id=f"{start + i:08x}-0000-4000-8000-000000000000")
                     for i, e in enumerate(events[start : start + group])]
            groups.append([Pending(e["event_id"], "fp" + e["event_id"], e) for e in chunk])
        started = time.perf_counter()
        for pending in groups:
            store.append({LEDGER: [pending]}, datetime.now(UTC))
        elapsed = time.perf_counter() - started
        store.close()
        return len(events) / elapsed
    finally:
        drop_pg_database(url)


def batch_rate(events: list[dict], tmp: Path, tree: bool, clients: int, workers: int) -> float:
    """Events a second through POST /v1/events/batch (1,000 a request, encrypted)."""
    url = create_pg_database()
    try:
        migrate(url)
        key = provision_key(url, roles=["ingest"])
        bodies = [post_request("/v1/events/batch",
                               orjson.dumps({"events": events[i : i + 1000]}), key=key)
                  for i in range(0, len(events), 1000)]
        env = {} if tree else {"LEDGER_UNSAFE_NO_TREE": "1"}
        with server(url, tmp, key, workers, **env) as running:
            result = run_load("127.0.0.1", running.port,
                              [bodies[i::clients] for i in range(clients)])
        assert set(result.statuses) == {201}, result.statuses
        return len(events) / result.seconds
    finally:
        drop_pg_database(url)


def bench_cost(events: list[dict], tmp: Path, rounds: int, clients: int, workers: int) -> None:
    store_with, store_without, http_with, http_without = [], [], [], []
    for _ in range(rounds):
        store_without.append(append_rate(events, tree=False))
        store_with.append(append_rate(events, tree=True))
        http_without.append(batch_rate(events, tmp, False, clients, workers))
        http_with.append(batch_rate(events, tmp, True, clients, workers))
    for name, with_tree, without in (("store appends, 5,000 a transaction", store_with,
                                      store_without),
                                     ("batch endpoint, encrypted, 1,000/request", http_with,
                                      http_without)):
        best_with, best_without = max(with_tree), max(without)
        line(f"{name}: without the tree", f"{best_without:,.0f} events/s")
        line("  with the tree", f"{best_with:,.0f} events/s")
        cost = 1 - best_with / best_without
        line("  cost of the tree", f"{cost:.1%}", "<= 10%", cost <= 0.10)
        runs = ", ".join(f"{a:,.0f}/{b:,.0f}" for a, b in zip(without, with_tree, strict=True))
        print(f"    (each run, without / with: {runs})")


# -- proofs on a long ledger -----------------------------------------------------------------


def fill(url: str, events: list[dict], total: int, group: int = 10_000) -> float:
    migrate(url)
    store = open_store(url)
    started = time.perf_counter()
    try:
        done = 0
        while done < total:
            n = min(group, total - done)
            chunk = [dict(e, event_id=f"{done + i:08x}-0000-4000-8000-000000000000")
                     for i, e in enumerate(events[(done + j) % len(events)] for j in range(n))]
            store.append({LEDGER: [[Pending(e["event_id"], "fp", e) for e in chunk]]},
                         datetime.now(UTC))
            done += n
            if done % 1_000_000 < group:
                rate = done / (time.perf_counter() - started)
                print(f"    filled {done:,} entries ({rate:,.0f}/s)", flush=True)
    finally:
        store.close()
    return total / (time.perf_counter() - started)


def get_request(path: str, key: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n"
            ).encode()


def timed(call: Callable[[int, int], Any], pairs: list[tuple[int, int]]
          ) -> tuple[list[float], Any]:
    """Seconds each ``call(a, b)`` took, and the last result (for a check that it is real)."""
    times, result = [], None
    for a, b in pairs:
        started = time.perf_counter()
        result = call(a, b)
        times.append(time.perf_counter() - started)
    return times, result


def bench_proofs(url: str, tmp: Path, total: int, samples: int) -> None:
    settings = Settings(database_url=url, key_file=tmp / f"keys-{url[-8:]}.json")
    store = open_store(url)
    try:
        tlog = TransparencyLog(store, load_log_identity(settings))
        checkpoint = tlog.sign(LEDGER)
        assert checkpoint is not None and checkpoint.size == total
        rng = random.Random(5)
        pairs = [(rng.randint(1, total), rng.randint(1, total)) for _ in range(samples)]
        inclusion = [(min(a, b), max(a, b)) for a, b in pairs]
        consistency = [(min(a, b), max(a, b)) for a, b in pairs]
        for seq, size in inclusion[:200]:  # warm up (the HTTP runs below are warmed too)
            tlog.inclusion(LEDGER, seq, size)
        times, proof = timed(lambda seq, size: tlog.inclusion(LEDGER, seq, size), inclusion)
        verify_inclusion(proof.leaf_index, proof.tree_size, proof.leaf_hash, proof.proof,
                         proof.root)
        line(f"inclusion proof, {total:,} entries, in the service", f"p50 {ms(pct(times, 50))}")
        line("  p99", ms(pct(times, 99)), "<= 5 ms", pct(times, 99) <= 0.005)
        times, proof = timed(lambda a, b: tlog.consistency(LEDGER, a, b), consistency)
        verify_consistency(proof.first, proof.second, proof.first_root, proof.second_root,
                           proof.proof)
        line("consistency proof, in the service", f"p50 {ms(pct(times, 50))}")
        line("  p99", ms(pct(times, 99)), "<= 5 ms", pct(times, 99) <= 0.005)
    finally:
        store.close()
    key = provision_key(url, roles=["verifier"])
    requests = {
        # The cheapest authenticated read, for what HTTP and access control add by themselves.
        "baseline GET /v1/ledger": [get_request("/v1/ledger", key)] * len(inclusion),
        "inclusion": [get_request(f"/v1/proofs/inclusion?seq={s}&tree_size={n}", key)
                      for s, n in inclusion],
        "consistency": [get_request(f"/v1/proofs/consistency?first={a}&second={b}", key)
                        for a, b in consistency],
        "bundle": [get_request(f"/v1/proofs/bundle?seq={s}", key) for s, _ in inclusion],
    }
    # Views off: the entries were appended through the store, and a projector catching up
    # on millions of them would share the cores with what is measured.
    with server(url, tmp, key, 1, LEDGER_RATE_READ="100000",
                LEDGER_PROJECTIONS="off") as running:
        for name, batch in requests.items():
            run_load("127.0.0.1", running.port, [batch[:200]])  # warm
            result = run_load("127.0.0.1", running.port, [batch])
            assert set(result.statuses) == {200}, result.statuses
            p50, p99 = result.percentile(50), result.percentile(99)
            line(f"{name} over HTTP (one client)", f"p50 {ms(p50)}")
            target = name in ("inclusion", "consistency")
            line("  p99", ms(p99), "<= 5 ms" if target else "", p99 <= 0.005 if target else None)


def bench_verify(url: str, tmp: Path, total: int) -> None:
    env = {**os.environ, "LEDGER_DATABASE_URL": url, "COLUMNS": "120",
           "LEDGER_KEY_FILE": str(tmp / f"keys-{url[-8:]}.json")}
    started = time.perf_counter()
    cli = subprocess.run([sys.executable, "-m", "api.cli", "verify"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    assert cli.returncode == 0, cli.stdout + cli.stderr
    line(f"phi-ledger verify ({total:,} entries, tree and checkpoint)",
         f"{total / elapsed:,.0f} entries/s", ">= 150,000", total / elapsed >= 150_000)
    print(f"    {cli.stdout.strip().splitlines()[-1]}")


# -- receipt to signed checkpoint ----------------------------------------------------------


async def _paced(port: int, requests: list[bytes], rate: float, connections: int,
                 receipts: list[tuple[int, float]], latencies: list[float]) -> float:
    """Send ``requests`` at ``rate`` a second (open loop), over ``connections``."""
    started = time.perf_counter()
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for i, request in enumerate(requests):
        queue.put_nowait((i, request))

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not queue.empty():
                i, request = queue.get_nowait()
                due = started + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent = time.perf_counter()
                writer.write(request)
                status, head, body = await read_response(reader)
                now = time.perf_counter()
                assert status == 201, head + body
                receipts.append((orjson.loads(body)["seq"], now))
                latencies.append(now - sent)
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return time.perf_counter() - started


async def _poll(port: int, key: str, stop: asyncio.Event, seen: list[tuple[float, int]]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = get_request("/v1/checkpoints/latest", key)
    try:
        while not stop.is_set():
            writer.write(request)
            status, _, body = await read_response(reader)
            now = time.perf_counter()
            if status == 200:
                size = Checkpoint.parse(Note.parse(body.decode()).text).size
                if not seen or size > seen[-1][1]:
                    seen.append((now, size))
            await asyncio.sleep(0.01)
    finally:
        writer.close()


def bench_checkpoint_latency(tmp: Path, events: list[dict], rate: int, seconds: int,
                             workers: int) -> None:
    url = create_pg_database()
    try:
        migrate(url)
        key = provision_key(url)
        n = rate * seconds
        requests = [post_request("/v1/events", orjson.dumps(e), key=key) for e in events[:n]]
        receipts: list[tuple[int, float]] = []
        latencies: list[float] = []
        seen: list[tuple[float, int]] = []
        with server(url, tmp, key, workers, LEDGER_RATE_READ="100000") as running:

            async def main() -> float:
                stop = asyncio.Event()
                poller = asyncio.create_task(_poll(running.port, key, stop, seen))
                # Enough connections that the schedule, not the latency, sets the pace.
                elapsed = await _paced(running.port, requests, rate, 256, receipts, latencies)
                await asyncio.sleep(1.5)
                stop.set()
                await poller
                return elapsed

            elapsed = uvloop.run(main())
        waits = []
        for seq, received in receipts:
            covered = next(t for t, size in seen if size >= seq)
            waits.append(max(0.0, covered - received))
        line(f"single POSTs paced at {rate:,}/s for {seconds} s", f"{n / elapsed:,.0f} events/s")
        line("  POST latency p99", ms(pct(latencies, 99)))
        line("  receipt -> signed checkpoint p50", ms(pct(waits, 50)))
        line("  receipt -> signed checkpoint p99", ms(pct(waits, 99)), "<= 1 s",
             pct(waits, 99) <= 1.0)
        line("  receipt -> signed checkpoint max", ms(max(waits)))
        sizes = [size for _, size in seen]
        line("  checkpoints seen", f"{len(sizes)} ({len(sizes) / (elapsed + 1.5):.1f}/s)")
    finally:
        drop_pg_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=10_000_000, help="the long ledger")
    parser.add_argument("--cost-events", type=int, default=100_000)
    parser.add_argument("--cost-rounds", type=int, default=2)
    parser.add_argument("--samples", type=int, default=2000, help="proofs per kind")
    parser.add_argument("--rate", type=int, default=2000, help="POSTs a second")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-clients", type=int, default=8)
    parser.add_argument("--skip", action="append", default=[],
                        choices=["cost", "proofs", "latency", "verify"])
    args = parser.parse_args()
    print(f"phi-ledger transparency benchmark: PostgreSQL, fsync on, {os.cpu_count()} cores")
    print(describe_host(), flush=True)
    events = workload(max(args.cost_events, args.rate * args.seconds, 10_000), seed=13)
    with TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        if "cost" not in args.skip:
            bench_cost(events[: args.cost_events], tmp, args.cost_rounds, args.batch_clients,
                       args.workers)
        if "latency" not in args.skip:
            bench_checkpoint_latency(tmp, events, args.rate, args.seconds, args.workers)
        if "proofs" not in args.skip or "verify" not in args.skip:
            url = create_pg_database()
            try:
                rate = fill(url, events[:10_000], args.entries)
                line(f"filled {args.entries:,} entries through the store", f"{rate:,.0f}/s")
                if "proofs" not in args.skip:
                    bench_proofs(url, tmp, args.entries, args.samples)
                if "verify" not in args.skip:
                    bench_verify(url, tmp, args.entries)
            finally:
                drop_pg_database(url)


if __name__ == "__main__":
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, line_buffering=True)
    main()
