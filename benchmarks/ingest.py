"""Ingest benchmark on PostgreSQL (fsync on).

    .venv/bin/python -m benchmarks.ingest [--events 100000] [--singles 30000] [--workers 2]

Prints, each with its target:
- the raw ceiling: COPY (FORMAT BINARY) of the same entry bytes into a bare table;
- the batch endpoint (1,000 events a request, encrypted) and its ratio to that ceiling;
- the same batch run with encryption off (LEDGER_UNSAFE_PLAINTEXT) and the cost of
  encryption (PHI-at-rest target: within 15%);
- single-event POSTs from 64 concurrent keep-alive clients, after a warm-up: rate, p50, p99;
- `verify` over a long chain (parallel stretches), in-process and through the CLI.

Each run starts its own server process on a fresh database and drops it afterwards.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

import orjson
import psycopg

from benchmarks.cpu import cpu_by_part, per_request
from benchmarks.host import describe as describe_host
from benchmarks.httpload import post_request, run_load
from benchmarks.support import ServerProcess, create_pg_database, drop_pg_database, provision_key
from ledger.admission import Pending
from ledger.chain import EMPTY_HEAD, extend
from ledger.migrate import migrate
from ledger.store import open_store
from ledger.verifier import verify

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 3000


def workload(n: int, seed: int) -> list[dict]:
    from api.workload import Workload

    return list(Workload(seed=seed).events(n))


def line(name: str, value: str, target: str = "", ok: bool | None = None) -> None:
    mark = "" if ok is None else ("  PASS" if ok else "  MISS")
    print(f"{name:<46} {value:>22}  {target}{mark}", flush=True)


def raw_copy_ceiling(url: str, events: list[dict]) -> float:
    """COPY (FORMAT BINARY) of the same entry bytes into a bare table, 10,000 a transaction."""
    rows = [e.encode() for e in extend(EMPTY_HEAD, "default", events, "2026-11-26T00:00:00Z")]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE raw_ceiling (seq bigint PRIMARY KEY, state bytea)")
        started = time.perf_counter()
        for start in range(0, len(rows), 10_000):
            with conn.transaction(), conn.cursor() as cur, cur.copy(
                "COPY raw_ceiling (seq, state) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int8", "bytea"])
                for i, row in enumerate(rows[start : start + 10_000], start + 1):
                    copy.write_row((i, row))
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE raw_ceiling")
    return len(rows) / elapsed


def serving(url: str, tmp: Path, workers: int, key: str, *, plaintext: bool = False
            ) -> ServerProcess:
    # Ingest alone: the views are projected by `phi-ledger project` (measured by
    # benchmarks/queries.py), not by a server worker competing for these cores.
    env = {"LEDGER_DATABASE_URL": url, "LEDGER_KEY_FILE": str(tmp / f"keys-{url[-8:]}.json"),
           "LEDGER_LOG_LEVEL": "warning", "LEDGER_PROJECTIONS": "off"}
    if plaintext:
        env["LEDGER_UNSAFE_PLAINTEXT"] = "1"
    return ServerProcess(env, args=("--workers", str(workers)), api_key=key)


@dataclass(frozen=True)
class BatchRun:
    """Events a second through the batch endpoint, and the CPU each part spent an event."""

    rate: float
    cpu: str


def bench_batches(url: str, tmp: Path, events: list[dict], clients: int, workers: int, *,
                  plaintext: bool = False, again: bool = False
                  ) -> tuple[BatchRun, BatchRun | None]:
    """Events a second through the batch endpoint, on a new database; with ``again``, also
    the rate of the same events posted a second time under new event ids, to the same
    server: the same patients, whose data keys the server now knows."""
    migrate(url)
    key = provision_key(url, roles=["ingest"])  # made before the server starts

    def bodies(batch: list[dict]) -> list[bytes]:
        return [post_request("/v1/events/batch",
                             orjson.dumps({"events": batch[i : i + 1000]}), key=key)
                for i in range(0, len(batch), 1000)]

    def rate(server: ServerProcess, batch: list[dict]) -> BatchRun:
        posts = bodies(batch)
        assert server.proc is not None, "a started server has a process"
        parts = {"server": [server.proc.pid]}
        before = cpu_by_part(parts)
        result = run_load("127.0.0.1", server.port, [posts[i::clients] for i in range(clients)])
        cpu = per_request(before, cpu_by_part(parts), len(batch), unit="us")
        assert set(result.statuses) == {201}, result.statuses
        return BatchRun(len(batch) / result.seconds, cpu)

    with serving(url, tmp, workers, key, plaintext=plaintext) as server:
        first = rate(server, events)
        second = rate(server, [{**e, "event_id": str(uuid.uuid4())} for e in events]
                      ) if again else None
    return first, second


def bench_singles(url: str, tmp: Path, events: list[dict], clients: int,
                  workers: int) -> tuple[float, float, float]:
    migrate(url)
    key = provision_key(url, roles=["ingest"])
    requests = [post_request("/v1/events", orjson.dumps(e), key=key) for e in events]
    warm, measured = requests[:WARMUP], requests[WARMUP:]
    with serving(url, tmp, workers, key) as server:
        run_load("127.0.0.1", server.port, [warm[i::clients] for i in range(clients)])
        result = run_load("127.0.0.1", server.port,
                          [measured[i::clients] for i in range(clients)])
    assert set(result.statuses) == {201}, result.statuses
    return len(measured) / result.seconds, result.percentile(50), result.percentile(99)


def fill_directly(url: str, events: list[dict], total: int) -> None:
    """A long chain for the verifier, appended through the store (no HTTP, no PHI)."""
    migrate(url)
    store = open_store(url)
    try:
        appended = 0
        while appended < total:
            chunk = [dict(e, event_id=f"{appended + i:08x}-0000-4000-8000-000000000000")
                     for i, e in enumerate(events[: min(5000, total - appended)])]
            store.append({"default": [[Pending(e["event_id"], "fp", e) for e in chunk]]},
                         datetime.now(UTC))
            appended += len(chunk)
    finally:
        store.close()


def bench_verify(url: str, tmp: Path) -> tuple[float, int, str]:
    store = open_store(url)
    try:
        started = time.perf_counter()
        verdict = verify(store, url, "default")
        elapsed = time.perf_counter() - started
    finally:
        store.close()
    assert verdict.ok, verdict
    env = {**os.environ, "LEDGER_DATABASE_URL": url, "LEDGER_KEY_FILE": str(tmp / "k.json"),
           "COLUMNS": "120"}
    cli = subprocess.run([sys.executable, "-m", "api.cli", "verify"], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    return verdict.verified_through / elapsed, verdict.verified_through, cli


def encryption_cost(n: int, clients: int, workers: int, rounds: int, known: bool) -> None:
    """Encrypted and plaintext batch runs alternated, so drift in the machine's load falls
    on both sides alike; the cost is reported from the best runs and from the means. With
    ``known``, also the cost once every patient's data key exists (see bench_batches):
    a new database makes a key for each patient it meets, ~5,700 in 100,000 events."""
    events = workload(n, seed=11)
    rates: dict[str, dict[bool, list[float]]] = {
        "new patients": {False: [], True: []}, "known patients": {False: [], True: []}}
    with TemporaryDirectory() as scratch:
        for _ in range(rounds):
            for plaintext in (False, True):
                url = create_pg_database()
                try:
                    first, second = bench_batches(url, Path(scratch), events, clients, workers,
                                                  plaintext=plaintext, again=known)
                finally:
                    drop_pg_database(url)
                name = "plaintext" if plaintext else "encrypted"
                for kind, run in (("new patients", first), ("known patients", second)):
                    if run is not None:
                        rates[kind][plaintext].append(run.rate)
                        label = "" if kind == "new patients" else ", patients known"
                        line(f"batch endpoint, {name}{label}", f"{run.rate:,.0f} events/s")
                        print(f"  CPU an event: {run.cpu}", flush=True)
    for kind, measured in rates.items():
        if not measured[False]:
            continue
        label = "" if kind == "new patients" else ", patients known"
        for pick_name, pick in (("best", max), ("mean", lambda r: sum(r) / len(r))):
            sealed, plain = pick(measured[False]), pick(measured[True])
            cost = 1 - sealed / plain
            line(f"cost of encryption{label} ({pick_name}: {sealed:,.0f} vs {plain:,.0f})",
                 f"{cost:.1%}", "<= 15%" if not label else "", cost <= 0.15 if not label
                 else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events for batch runs")
    parser.add_argument("--singles", type=int, default=30_000, help="single-event POSTs")
    parser.add_argument("--clients", type=int, default=64, help="concurrent single clients")
    # 16: with 8 keep-alive connections over 2 workers, how the kernel happened to spread
    # them (6:2 as often as 4:4) swung a run by a third.
    parser.add_argument("--batch-clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--verify-entries", type=int, default=1_000_000)
    parser.add_argument("--encryption-rounds", type=int, default=0, metavar="N",
                        help="only the cost of encryption: N alternating encrypted and"
                        " plaintext batch runs, best and mean of each")
    parser.add_argument("--known-patients", action="store_true",
                        help="with --encryption-rounds: also post the same events again"
                        " (new ids) to each server, once every patient's key exists")
    args = parser.parse_args()
    print(describe_host(), flush=True)
    if args.encryption_rounds:
        encryption_cost(args.events, args.batch_clients, args.workers, args.encryption_rounds,
                        args.known_patients)
        return

    print(f"phi-ledger ingest benchmark: PostgreSQL, fsync on, {os.cpu_count()} cores,"
          f" {args.workers} server worker(s)")
    events = workload(args.events + args.singles + WARMUP, seed=11)
    batch_events = events[: args.events]
    single_events = events[args.events :]

    with TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        url = create_pg_database()
        try:
            ceiling = raw_copy_ceiling(url, batch_events)
            line("raw COPY ceiling (same rows, bare table)", f"{ceiling:,.0f} rows/s")
            sealed_run, _ = bench_batches(url, tmp, batch_events, args.batch_clients,
                                          args.workers)
            sealed = sealed_run.rate
            line("batch endpoint, encrypted (1,000/request)", f"{sealed:,.0f} events/s",
                 ">= 30,000", sealed >= 30_000)
            line("  ratio to raw COPY", f"{sealed / ceiling:.1%}", ">= 20%",
                 sealed / ceiling >= 0.2)
        finally:
            drop_pg_database(url)

        url = create_pg_database()
        try:
            plain = bench_batches(url, tmp, batch_events, args.batch_clients, args.workers,
                                  plaintext=True)[0].rate
            line("batch endpoint, encryption off", f"{plain:,.0f} events/s")
            cost = 1 - sealed / plain
            line("  cost of encryption", f"{cost:.1%}", "<= 15%", cost <= 0.15)
        finally:
            drop_pg_database(url)

        url = create_pg_database()
        try:
            rate, p50, p99 = bench_singles(url, tmp, single_events, args.clients, args.workers)
            line(f"single POSTs, {args.clients} clients", f"{rate:,.0f} events/s", ">= 3,000",
                 rate >= 3_000)
            line("  latency p50", f"{p50 * 1000:.1f} ms")
            line("  latency p99", f"{p99 * 1000:.1f} ms", "<= 50 ms", p99 <= 0.05)
        finally:
            drop_pg_database(url)

        url = create_pg_database()
        try:
            fill_directly(url, batch_events, args.verify_entries)
            rate, n, cli = bench_verify(url, tmp)
            line(f"verify ({n:,} entries)", f"{rate:,.0f} entries/s", ">= 150,000",
                 rate >= 150_000)
            print(f"  phi-ledger verify: {cli}")
        finally:
            drop_pg_database(url)


if __name__ == "__main__":
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, line_buffering=True)
    main()
