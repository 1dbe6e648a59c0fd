"""Ingest benchmark on PostgreSQL (fsync on): batch and single-event throughput over HTTP,
the raw COPY ceiling of the same rows, and `phi-ledger verify` throughput.

    .venv/bin/python -m benchmarks.ingest [--events 200000] [--singles 30000]

Each figure is printed with its target; the script starts its own server process on a
fresh database and drops the database afterwards.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psycopg

from benchmarks.httpload import post_request, run_load
from ledger.chain import EMPTY_HEAD, extend
from ledger.migrate import migrate
from ledger.store import open_store
from ledger.verifier import verify_ledger
from tests.support import ServerProcess, create_pg_database, drop_pg_database

ROOT = Path(__file__).resolve().parents[1]


def workload(n: int, seed: int) -> list[dict]:
    from api.workload import Workload

    return list(Workload(seed=seed).events(n))


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


def batch_bodies(events: list[dict], size: int) -> list[bytes]:
    return [
        post_request("/v1/events/batch", orjson.dumps({"events": events[i : i + size]}))
        for i in range(0, len(events), size)
    ]


def bench_batches(server: ServerProcess, events: list[dict], clients: int) -> float:
    bodies = batch_bodies(events, 1000)
    per_client = [bodies[i::clients] for i in range(clients)]
    result = run_load("127.0.0.1", server.port, per_client)
    assert set(result.statuses) == {201}, result.statuses
    return len(events) / result.seconds


def bench_singles(server: ServerProcess, events: list[dict], clients: int) -> tuple[float, float,
                                                                                    float]:
    requests = [post_request("/v1/events", orjson.dumps(e)) for e in events]
    per_client = [requests[i::clients] for i in range(clients)]
    result = run_load("127.0.0.1", server.port, per_client)
    assert set(result.statuses) == {201}, result.statuses
    return len(events) / result.seconds, result.percentile(50), result.percentile(99)


def bench_verify(url: str) -> tuple[float, int]:
    store = open_store(url)
    try:
        started = time.perf_counter()
        verdict = verify_ledger(store, "default")
        elapsed = time.perf_counter() - started
    finally:
        store.close()
    assert verdict.ok, verdict
    return verdict.verified_through / elapsed, verdict.verified_through


def bench_verify_cli(url: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "api.cli", "verify"], cwd=ROOT, env={**env, "COLUMNS": "120"},
        capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


def line(name: str, value: str, target: str = "", ok: bool | None = None) -> None:
    mark = "" if ok is None else ("  PASS" if ok else "  MISS")
    print(f"{name:<46} {value:>22}  {target}{mark}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events for the batch run")
    parser.add_argument("--singles", type=int, default=30_000, help="single-event POSTs")
    parser.add_argument("--clients", type=int, default=64, help="concurrent single clients")
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    args = parser.parse_args()

    print(f"phi-ledger ingest benchmark (PostgreSQL, fsync on, {os.cpu_count()} cores,"
          f" {args.workers} server workers)")
    events = workload(args.events + args.singles, seed=11)
    batch_events, single_events = events[: args.events], events[args.events :]

    url = create_pg_database()
    try:
        ceiling = raw_copy_ceiling(url, batch_events)
        line("raw COPY ceiling (same rows, bare table)", f"{ceiling:,.0f} rows/s")
        migrate(url)
        tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"phi-bench-{os.getpid()}"
        tmp.mkdir(exist_ok=True)
        env = {"LEDGER_DATABASE_URL": url, "LEDGER_KEY_FILE": str(tmp / "keys.json"),
               "LEDGER_LOG_LEVEL": "warning"}
        with ServerProcess(env, args=("--workers", str(args.workers))) as server:
            rate = bench_batches(server, batch_events, args.batch_clients)
            line("batch endpoint (1,000/batch)", f"{rate:,.0f} events/s", ">= 30,000",
                 rate >= 30_000)
            line("  ratio to raw COPY", f"{rate / ceiling:.1%}", ">= 20%", rate / ceiling >= 0.2)
            rate, p50, p99 = bench_singles(server, single_events, args.clients)
            line(f"single POSTs, {args.clients} clients", f"{rate:,.0f} events/s", ">= 3,000",
                 rate >= 3_000)
            line("  latency p50", f"{p50 * 1000:.1f} ms")
            line("  latency p99", f"{p99 * 1000:.1f} ms", "<= 50 ms", p99 <= 0.05)
        rate, n = bench_verify(url)
        line(f"verify ({n:,} entries, in-process)", f"{rate:,.0f} entries/s", ">= 150,000",
             rate >= 150_000)
        print("phi-ledger verify:", bench_verify_cli(url, {**os.environ, **env}))
    finally:
        drop_pg_database(url)


if __name__ == "__main__":
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, line_buffering=True)
    main()
