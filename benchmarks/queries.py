"""Read-side benchmark on PostgreSQL (fsync on): audit queries, catch-up and lag.

    .venv/bin/python -m benchmarks.queries [--events 10000000] [--database URL]

1. Loads ``--events`` synthetic events through the ingest path (validation, encryption,
   group commit; ``--loaders`` processes, each its own seeded workload), with no projection
   running. With ``--database`` an existing database is reused and only topped up.
2. Projection catch-up: every view from nothing to the head, in this process
   (target >= 25,000 events/s).
3. History pages over HTTP: 100-row pages of ``/v1/patients/{id}/accesses`` and of
   ``/v1/users/{id}/accesses`` for random patients and users (target p99 <= 15 ms), from
   keep-alive clients: one asking page after page (the latency of a page), then two at
   once (``--clients``), which keeps both cores of these machines busy -- server, database
   and projector share them -- so their p99 is mostly the wait behind the other page.
   Each page also records, durably, a ``query`` event per patient it shows: one for a
   patient's history, up to 100 for a user's.
4. Steady-state lag while ingesting 2,000 events/s: from each batch's receipt to the moment
   every view holds it (target p99 <= 1 s).

Prints each figure beside its target.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from urllib.parse import quote

import orjson
import psycopg
from psycopg import sql

from benchmarks.cpu import cpu_by_part, per_request
from benchmarks.host import describe as describe_host
from benchmarks.httpload import post_request, run_load
from benchmarks.support import ServerProcess, create_pg_database, drop_pg_database
from ledger.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
LOAD_BATCH = 1000


def line(name: str, value: str, target: str = "", ok: bool | None = None) -> None:
    mark = "" if ok is None else ("  PASS" if ok else "  MISS")
    print(f"{name:<46} {value:>26}  {target}{mark}", flush=True)


def get_request(path: str, headers: dict[str, str], host: str = "127.0.0.1") -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


# -- 1. loading ---------------------------------------------------------------------------


def load_part(url: str, key_file: str, seed: int, events: int, out: str) -> None:
    """One loader process: its seeded workload through ``Ingest``; writes the patient and
    user ids it used to ``out`` (the benchmark needs real ones to ask about)."""
    from api.app import build_services
    from api.workload import Workload
    from ledger.runtime import tune_gc

    tune_gc()
    svc = build_services(Settings(database_url=url, key_file=Path(key_file),
                                  project_inline=False))
    patients: set[str] = set()
    users: set[str] = set()
    chunk: list[dict[str, Any]] = []
    done = 0
    started = time.perf_counter()
    try:
        for event in Workload(seed=seed).events(events):
            chunk.append(event)
            if event.get("patient"):
                patients.add(event["patient"]["id"])
            users.add(event["actor"]["id"])
            if len(chunk) == LOAD_BATCH:
                svc.ingest.record_sync("default", chunk, batch=True)
                done += len(chunk)
                chunk = []
                if done % 200_000 == 0:
                    rate = done / (time.perf_counter() - started)
                    print(f"  loader {seed}: {done:,} ({rate:,.0f}/s)", flush=True)
        if chunk:
            svc.ingest.record_sync("default", chunk, batch=True)
    finally:
        svc.writer.stop()
        svc.store.close()
    Path(out).write_text(json.dumps({"patients": sorted(patients), "users": sorted(users)}))


def head_seq(url: str) -> int:
    from ledger.store import open_store

    store = open_store(url)
    try:
        return store.head("default").seq
    finally:
        store.close()


def load(url: str, tmp: Path, key_file: str, events: int, loaders: int) -> dict[str, list[str]]:
    have = head_seq(url)
    ids: dict[str, set[str]] = {"patients": set(), "users": set()}
    missing = max(0, events - have)
    # Seeds continue from what is there, so a top-up adds new events rather than replays.
    first_seed = 1000 + have // max(1, events // loaders)
    procs = []
    started = time.perf_counter()
    for i in range(loaders):
        share = missing // loaders + (1 if i < missing % loaders else 0)
        out = tmp / f"ids-{i}.json"
        procs.append((out, subprocess.Popen(
            [sys.executable, "-m", "benchmarks.queries", "--load-part", url, key_file,
             str(first_seed + i), str(share), str(out)], cwd=ROOT)))
    for _, proc in procs:
        if proc.wait() != 0:
            raise SystemExit("a loader failed")
    elapsed = time.perf_counter() - started
    if missing:
        line("load through ingest (no projection)", f"{missing / elapsed:,.0f} events/s")
    for out, _ in procs:
        found = json.loads(out.read_text())
        ids["patients"].update(found["patients"])
        ids["users"].update(found["users"])
    return {k: sorted(v) for k, v in ids.items()}


def kept_file(url: str, what: str) -> Path:
    """Where a reused database's key ring and ids are kept, beside the project (the first
    database, qbench10m, kept the names without a suffix)."""
    name = url.rsplit("/", 1)[-1]
    suffix = "" if name == "qbench10m" else f"-{name}"
    return ROOT / "var" / f"bench-queries-{what}{suffix}.json"


def remembered_ids(ids: dict[str, list[str]], url: str, keep: bool) -> dict[str, list[str]]:
    """The ids a reused database was loaded with (kept beside it), plus any new ones."""
    kept = kept_file(url, "ids")
    if keep and kept.exists():
        old = json.loads(kept.read_text())
        ids = {k: sorted(set(ids[k]) | set(old.get(k, []))) for k in ids}
    if keep:
        kept.parent.mkdir(exist_ok=True)
        kept.write_text(json.dumps(ids))
    return ids


# -- 2. catch-up --------------------------------------------------------------------------


def catch_up(url: str) -> tuple[int, float]:
    """Every view from empty to the head: a rebuild, timed (on a reused database the
    views may already be current)."""
    from ledger.runtime import tune_gc
    from ledger.store import open_store
    from projections.runner import Projector

    tune_gc()
    store = open_store(url)
    try:
        projector = Projector(store)
        started = time.perf_counter()
        done = projector.rebuild()
        return done, time.perf_counter() - started
    finally:
        store.close()


# -- 3. pages -----------------------------------------------------------------------------


def pages(server: ServerProcess, ids: dict[str, list[str]], kind: str, count: int,
          clients: int, parts: Mapping[str, Iterable[int]], seed: int = 7,
          ) -> tuple[Any, int, str]:
    """``count`` first pages (100 rows) of random patients' or users' access histories;
    the first fifth warms the server up and is not counted. Also the CPU each of
    ``parts`` (and PostgreSQL) spent a measured page (see benchmarks.cpu)."""
    rng = random.Random(seed)
    route = "/v1/users/{}/accesses" if kind == "users" else "/v1/patients/{}/accesses"
    requests = [
        get_request(route.format(quote(rng.choice(ids[kind]), safe=""))
                    + "?purpose=HOPERAT&limit=100", server.headers)
        for _ in range(count)
    ]
    warm = requests[: count // 5]
    run_load("127.0.0.1", server.port, [warm[i::clients] for i in range(clients)])
    measured = requests[count // 5 :]
    before = cpu_by_part(parts)
    result = run_load("127.0.0.1", server.port, [measured[i::clients] for i in range(clients)])
    return result, len(measured), per_request(before, cpu_by_part(parts), len(measured))


# -- 4. lag -------------------------------------------------------------------------------


def lag_under_load(url: str, server: ServerProcess, rate: int, seconds: int,
                   seed: int = 99) -> list[float]:
    """Post ``rate`` events/s in batches of 100 for ``seconds``; for each batch, the time
    from its receipt until every view's position covers it."""
    from api.workload import Workload

    events = list(Workload(seed=seed).events(rate * seconds))
    batches = [events[i : i + 100] for i in range(0, len(events), 100)]
    acks: list[tuple[float, int]] = []
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT min(notification_id) FROM notification_tracking"
                    " WHERE application_name <> '__migration__'").fetchone()
                assert row is not None, "an aggregate always answers one row"
                samples.append((time.perf_counter(), int(row[0] or 0)))
                time.sleep(0.01)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    import httpx

    interval = 100 / rate
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=30) as client:
        start = time.perf_counter()
        for n, batch in enumerate(batches):
            wait = start + n * interval - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            response = client.post("/v1/events/batch", content=orjson.dumps({"events": batch}),
                                   headers={"content-type": "application/json"})
            response.raise_for_status()
            acks.append((time.perf_counter(), response.json()["receipts"][-1]["seq"]))
    time.sleep(3)
    stop.set()
    poller.join()
    with psycopg.connect(url) as conn:
        positions: dict[int, int] = dict(conn.execute(
            "SELECT originator_version, notification_id FROM stored_events"
            " WHERE originator_version = ANY(%s)", ([seq for _, seq in acks],)).fetchall())
    lags = []
    for acked, seq in acks:
        wanted = positions[seq]
        seen = next((t for t, p in samples if p >= wanted), None)
        lags.append(float("inf") if seen is None else max(0.0, seen - acked))
    return lags


def ensure_database(url: str) -> None:
    """Create the database ``url`` names when it does not exist yet (a first load)."""
    base, name = url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load-part":
        url, key_file, seed, events, out = sys.argv[2:7]
        load_part(url, key_file, int(seed), int(events), out)
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--database", help="reuse (and keep) this PostgreSQL database")
    parser.add_argument("--loaders", type=int, default=2)
    parser.add_argument("--pages", type=int, default=3000, help="per kind")
    parser.add_argument("--clients", default="1,2",
                        help="concurrent page clients, one run per number listed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--load-only", action="store_true", help="stop after loading")
    parser.add_argument("--projector", choices=("process", "inline"), default="process",
                        help="views kept by a `phi-ledger project` beside the server, or"
                        " by a server worker")
    parser.add_argument("--no-catch-up", action="store_true",
                        help="skip the rebuild (the views of a reused database are current)")
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()

    print(describe_host(), flush=True)
    url = args.database or create_pg_database()
    if args.database:
        ensure_database(url)
    with TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        # A reused database keeps its key ring beside the project; a fresh one is temporary.
        kept = kept_file(url, "keys")
        key_file = os.environ.get("LEDGER_KEY_FILE") or str(kept if args.database
                                                            else tmp / "keys.json")
        try:
            # One key ring for every process: made (with the schema) before any loader.
            from api.app import build_services

            svc = build_services(Settings(database_url=url, key_file=Path(key_file),
                                          project_inline=False))
            svc.writer.stop()
            svc.store.close()
            print(f"database {url}", flush=True)
            ids = remembered_ids(load(url, tmp, key_file, args.events, args.loaders), url,
                                 keep=bool(args.database))
            line("ledger size", f"{head_seq(url):,} entries")
            if args.load_only:
                return

            if not args.no_catch_up:
                done, seconds = catch_up(url)
                rate = done / max(seconds, 1e-9)
                line("projection catch-up, all views", f"{rate:,.0f} events/s", ">= 25,000",
                     rate >= 25_000)
                line("  (entries applied)", f"{done:,} in {seconds:,.1f} s")

            # One benchmark key asks for every page: lift the per-identity read limit. The
            # views are kept by a `phi-ledger project` process beside the server (the
            # layout for a loaded PostgreSQL deployment: a follower inside a server worker
            # takes that worker's interpreter lock from the requests it serves).
            env = {"LEDGER_DATABASE_URL": url, "LEDGER_KEY_FILE": key_file,
                   "LEDGER_LOG_LEVEL": "warning", "LEDGER_RATE_READ": "1000000",
                   "LEDGER_PROJECTIONS": "off" if args.projector == "process" else "on"}
            projector = None
            if args.projector == "process":
                projector = subprocess.Popen(
                    [sys.executable, "-m", "api.cli", "project"], cwd=ROOT,
                    env={**os.environ, **env}, stdout=subprocess.DEVNULL)
            try:
                run_served(url, env, ids, args, projector.pid if projector else None)
            finally:
                if projector is not None:
                    projector.terminate()
                    projector.wait(30)
        finally:
            if not args.database:
                drop_pg_database(url)


def run_served(url: str, env: dict[str, str], ids: dict[str, list[str]],
               args: argparse.Namespace, projector: int | None = None) -> None:
    """Pages and lag, over HTTP, against a server of ``args.workers`` workers (and the
    ``projector`` process, whose CPU is counted with theirs)."""
    with ServerProcess(env, args=("--workers", str(args.workers))) as server:
        assert server.proc is not None
        parts = {"server": [server.proc.pid], "projector": [projector] if projector else []}
        for kind in ("patients", "users"):
            for clients in (int(n) for n in str(args.clients).split(",")):
                result, measured, cpu = pages(server, ids, kind, args.pages, clients, parts)
                bad = {s: n for s, n in result.statuses.items() if s != 200}
                p50, p99 = result.percentile(50) * 1000, result.percentile(99) * 1000
                how = "one at a time" if clients == 1 else f"{clients} at once"
                line(f"{kind[:-1]} history page, 100 rows, {how}",
                     f"p50 {p50:.1f} ms, p99 {p99:.1f} ms", "p99 <= 15 ms", p99 <= 15)
                line("  (pages)", f"{measured:,} at {measured / result.seconds:,.0f}/s,"
                     f" p90 {result.percentile(90) * 1000:.1f} ms"
                     + (f", non-200: {bad}" if bad else ""))
                line("  (CPU a page)", cpu)
        lags = lag_under_load(url, server, args.rate, args.seconds)
        lag99 = percentile(lags, 99)
        line(f"view lag while ingesting {args.rate:,}/s",
             f"p50 {percentile(lags, 50) * 1000:.0f} ms, p99 {lag99 * 1000:.0f} ms",
             "p99 <= 1 s", lag99 <= 1.0)


if __name__ == "__main__":
    main()

__all__ = ["get_request", "post_request"]
