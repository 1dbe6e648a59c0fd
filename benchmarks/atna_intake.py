"""The ATNA intake's own path, in one process and without TLS: where a message's time goes.

    .venv/bin/python -m benchmarks.atna_intake [--messages 4000] [--senders 4]

First the floor: each sender commits its messages' bytes one at a time, bare inserts on a
connection of its own, nothing else -- the most any intake can take while each message
is durable before its sender's next. Then the intake: each sender (an asyncio task) hands
``AtnaIntake.take`` (what the TLS listener calls for each frame) one RFC 5424 message at
a time, the next only once the last is held, while the intake's settler settles them
into the ledger. Two runs on fresh PostgreSQL databases (fsync on), the service's
runtime settings (GIL switch interval, tuned collector): messages that each name a
patient not seen before (each needs a data key), and messages naming 20 patients (their
keys cached). Each prints the rates held and settled, the latency to held, the process's
CPU per message and each thread's (the event loop, the holding threads, the settler, the
writer's sealer and committer), and the writer's mean group and time per transaction
(sealing; appending, commit included). The TLS figure of ``benchmarks.formats`` adds the
cost of TLS records and the socket reads to this path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvloop

from api.app import GIL_SWITCH_INTERVAL
from api.formats.syslog import syslog_message
from api.syslog.intake import Sender
from api.syslog.service import intake_of
from benchmarks.cpu import parse_stat
from benchmarks.formats import audit_message
from benchmarks.host import describe as describe_host
from benchmarks.support import create_pg_database, drop_pg_database, services_on
from ledger.writer import WriterStats

KNOWN_PATIENTS = 20
WARM_UP = 50  # messages of the first sender taken alone first: connections, caches


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far of each of this process's threads, by name (Linux's /proc; empty
    elsewhere). Threads of one name (a pool's) are summed."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            raw = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = names.get(int(tid), "other")
        out[name] = out.get(name, 0.0) + parse_stat(raw)[2]
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def floor(messages: int, senders: int) -> str:
    """What the database allows: each sender commits its messages' bytes one at a time,
    a bare insert on a connection of its own (psycopg's async connections, no threads),
    nothing else. Each message must be durable before its sender's next is sent, so this
    is about ``senders`` / (one commit's latency): the ceiling of any intake that keeps
    that promise, on this host's disk."""
    import psycopg

    per_sender = messages // senders
    frame = syslog_message(audit_message(0, "PAT-0"))
    url = create_pg_database()
    try:
        async def main() -> float:
            conns = [await psycopg.AsyncConnection.connect(url, autocommit=True)
                     for _ in range(senders)]
            await conns[0].execute("CREATE TABLE arrivals (id bigserial PRIMARY KEY,"
                                   " message bytea NOT NULL)")

            async def send(conn: psycopg.AsyncConnection[Any]) -> None:
                for _ in range(per_sender):
                    await conn.execute("INSERT INTO arrivals (message) VALUES (%s)",
                                       (frame,), prepare=True)

            began = time.perf_counter()
            await asyncio.gather(*(send(c) for c in conns))
            seconds = time.perf_counter() - began
            for conn in conns:
                await conn.close()
            return seconds

        seconds = uvloop.run(main())
        return f"{per_sender * senders / seconds:>7,.0f} msg/s"
    finally:
        drop_pg_database(url)


def run(messages: int, senders: int, patients: int | None) -> str:
    """One run on a fresh database; its line of figures. ``patients``: how many distinct
    patients the messages name (None: a new one each)."""
    per_sender = messages // senders
    streams = [[syslog_message(audit_message(
        s * per_sender + i,
        f"PAT-{s * per_sender + i if patients is None else (s * 31 + i) % patients}"))
        for i in range(per_sender)] for s in range(senders)]
    url = create_pg_database()
    try:
        with services_on(url) as svc:
            intake = intake_of(svc)
            sender = Sender("atna-sender", "default")
            latencies: list[float] = []

            async def send(frames: list[bytes], timed: bool) -> None:
                for frame in frames:
                    began = time.perf_counter()
                    await intake.take(sender, frame)
                    if timed:
                        latencies.append(time.perf_counter() - began)

            async def settled(count: int) -> None:
                while intake.stats.accepted < count:
                    await asyncio.sleep(0.001)

            stats = svc.writer.stats

            async def main() -> tuple[float, float, float,
                                      tuple[dict[str, float], dict[str, float]], WriterStats]:
                """Seconds until every timed message was held, and until every one was
                settled; the process's CPU over that time, its threads' CPU as it began
                and as it ended, and the writer's figures as it began (after the
                warm-up)."""
                settler = asyncio.get_running_loop().create_task(intake.run_settler())
                await send(streams[0][:WARM_UP], False)
                await settled(WARM_UP)
                cpu, threads, earlier = time.process_time(), thread_cpu(), replace(stats)
                began = time.perf_counter()
                await asyncio.gather(*(send(frames[WARM_UP:] if s == 0 else frames, True)
                                       for s, frames in enumerate(streams)))
                held = time.perf_counter() - began
                await settled(per_sender * senders)
                seconds = time.perf_counter() - began
                spent, threads_after = time.process_time() - cpu, thread_cpu()
                settler.cancel()  # its thread ends with it: its CPU read first
                return held, seconds, spent, (threads, threads_after), earlier

            held, seconds, cpu, (threads_before, threads), earlier = uvloop.run(main())
            timed = len(latencies)
            transactions = stats.transactions - earlier.transactions
            events = stats.events - earlier.events
            sealing = stats.seal_seconds - earlier.seal_seconds
            appending = stats.commit_seconds - earlier.commit_seconds
            by_thread = ", ".join(
                f"{name} {(spent - threads_before.get(name, 0.0)) / timed * 1e6:.0f}"
                for name, spent in sorted(threads.items(), key=lambda kv: -kv[1])
                if spent - threads_before.get(name, 0.0) > 0)
            return (f"held {timed / held:>7,.0f} msg/s, settled {timed / seconds:>7,.0f}"
                    f" msg/s; latency to held p50 "
                    f"{percentile(latencies, 50) * 1e3:.2f} ms, p99 "
                    f"{percentile(latencies, 99) * 1e3:.2f} ms; process CPU "
                    f"{cpu / timed * 1e6:.0f} us/msg ({cpu / seconds:.2f} of a "
                    f"core); "
                    f"{events / transactions:.1f} messages a transaction, sealing "
                    f"{sealing / transactions * 1e3:.2f} ms and appending "
                    f"{appending / transactions * 1e3:.2f} ms each\n"
                    f"  CPU a message by thread (us): {by_thread}")
    finally:
        drop_pg_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--senders", type=int, default=4)
    args = parser.parse_args()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)  # as `phi-ledger serve` runs
    print(describe_host(), flush=True)
    print(f"{args.senders} senders, {args.messages:,} messages, PostgreSQL, no TLS", flush=True)
    print(f"floor (bare commits): {floor(args.messages, args.senders)}", flush=True)
    print(f"new patients:      {run(args.messages, args.senders, None)}", flush=True)
    print(f"{KNOWN_PATIENTS} patients:       "
          f"{run(args.messages, args.senders, KNOWN_PATIENTS)}", flush=True)


if __name__ == "__main__":
    main()
