"""Standard formats on PostgreSQL (fsync on), beside the native batch of the same run.

    .venv/bin/python -m benchmarks.formats [--events 20000] [--atna 8000] [--clients 2]
                                           [--workers 1]

One `phi-ledger serve [--workers N]` (projections off, the ATNA TLS listener on) on a
fresh database:

Each ingest figure comes with the CPU an event the server's processes and PostgreSQL
spent (from /proc, see benchmarks.cpu).

- native: `POST /v1/events/batch`, 1,000 events a request;
- FHIR: `POST /fhir` batch Bundles of 1,000 AuditEvents (the same events, rendered as
  BALP AuditEvents), target >= 10,000 events/s;
- ATNA: 4 mutual-TLS senders, octet-counted RFC 5424 frames, each message durable (held
  in the inbox) before the listener reads the sender's next frame; the rate held, and
  the rate into the ledger: the clock stops when the ledger holds them all; target
  >= 5,000 messages/s.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import orjson

from api.formats.fhir_audit import to_audit_event
from api.formats.syslog import frame, syslog_message
from benchmarks.certs import Pki
from benchmarks.cpu import cpu_by_part, per_request
from benchmarks.host import describe as describe_host
from benchmarks.httpload import post_request, run_load
from benchmarks.support import (
    ServerProcess,
    create_pg_database,
    drop_pg_database,
    free_port,
    provision_key,
)
from ledger.event import AUTH_ACTIONS, PHI_ACCESS_ACTIONS
from ledger.migrate import migrate
from ledger.store import open_store

SENDERS = 4


def line(name: str, value: str, target: str = "", ok: bool | None = None) -> None:
    mark = "" if ok is None else ("  PASS" if ok else "  MISS")
    print(f"{name:<40} {value:>22}  {target}{mark}", flush=True)


def events(n: int, seed: int = 7) -> list[dict]:
    from api.workload import Workload

    mappable = PHI_ACCESS_ACTIONS | AUTH_ACTIONS
    out = [e for e in Workload(seed=seed).events(n * 2) if e["action"] in mappable]
    return out[:n]


def audit_message(i: int, patient: str) -> bytes:
    return f"""<AuditMessage><EventIdentification EventActionCode="R"
 EventDateTime="2026-11-26T08:00:00.{i % 1000:03d}Z" EventOutcomeIndicator="0">
<EventID csd-code="110110" codeSystemName="DCM" originalText="Patient Record"/>
<PurposeOfUse csd-code="TREAT"/></EventIdentification>
<ActiveParticipant UserID="user-{i % 97}" UserIsRequestor="true"
 NetworkAccessPointID="198.51.100.{i % 250}" NetworkAccessPointTypeCode="2"/>
<AuditSourceIdentification AuditSourceID="bench-ehr"/>
<ParticipantObjectIdentification ParticipantObjectID="{patient}^^^&amp;1.2&amp;ISO"
 ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1"/>
<ParticipantObjectIdentification ParticipantObjectID="msg-{i}" ParticipantObjectTypeCode="2"
 ParticipantObjectTypeCodeRole="3"/></AuditMessage>""".encode()


def head(url: str) -> int:
    store = open_store(url)
    try:
        return store.head("default").seq
    finally:
        store.close()


def timed_posts(server: ServerProcess, path: str, bodies: list[bytes], clients: int,
                key: str, count: int) -> tuple[float, str]:
    """Events a second, and the CPU an event of the server's processes and PostgreSQL's
    (read from /proc around the run: on two shared cores the rate alone hides whether
    the server or the database is what costs)."""
    posts = [post_request(path, b, key=key) for b in bodies]
    assert server.proc is not None, "a started server has a process"
    parts = {"server": [server.proc.pid]}
    before = cpu_by_part(parts)
    result = run_load("127.0.0.1", server.port, [posts[i::clients] for i in range(clients)])
    cpu = per_request(before, cpu_by_part(parts), count, unit="us")
    assert set(result.statuses) <= {200, 201}, result.statuses
    return count / result.seconds, cpu


def atna(url: str, pki: Pki, server: ServerProcess, port: int, n: int
         ) -> tuple[float, float, str]:
    """Messages a second held (durable in the inbox: what lets a connection's next
    frame be read) and in the ledger (settled), from the first frame sent; and the CPU
    a message of the server's processes, PostgreSQL's and this process's (the senders'
    TLS, and the polling for the ledger's head)."""
    start_seq = head(url)
    per_sender = n // SENDERS
    streams = [b"".join(frame(syslog_message(audit_message(s * per_sender + i,
                                                             f"PAT-{(s * 31 + i) % 5000}")))
                        for i in range(per_sender)) for s in range(SENDERS)]
    context = pki.client_context("atna-sender")
    connections = []
    for _ in range(SENDERS):
        raw = socket.create_connection(("127.0.0.1", port))
        connections.append(context.wrap_socket(raw, server_hostname="127.0.0.1"))

    def send(tls: socket.socket, data: bytes) -> None:
        tls.sendall(data)

    assert server.proc is not None, "a started server has a process"
    before = cpu_by_part({"server": [server.proc.pid], "senders": [os.getpid()]})
    started = time.perf_counter()
    threads = [threading.Thread(target=send, args=(c, d)) for c, d in zip(connections, streams,
                                                                            strict=True)]
    for t in threads:
        t.start()
    n_sent = per_sender * SENDERS
    target = start_seq + n_sent
    # One store kept open for the polling: opening one (a pool, its threads, type
    # lookups) every 20 ms took about a third of a core from the server on the same 2 cores.
    store = open_store(url)
    held_seconds = None
    try:
        while store.head("default").seq < target:
            if held_seconds is None and _held_so_far(store) >= n_sent:
                held_seconds = time.perf_counter() - started
            time.sleep(0.005)
    finally:
        store.close()
    seconds = time.perf_counter() - started
    cpu = per_request(before, cpu_by_part({"server": [server.proc.pid],
                                           "senders": [os.getpid()]}), n_sent, unit="us")
    for t in threads:
        t.join()
    for c in connections:
        c.close()
    return n_sent / (held_seconds or seconds), n_sent / seconds, cpu


def budget(target: int, unit: str) -> str:
    """What a target rate leaves of this host's CPU (every core, whole) for each item:
    the ceiling on the sum of the CPU lines above it, senders included."""
    cores = os.cpu_count() or 1
    return (f"the target leaves {cores * 1e6 / target:.0f} us of CPU {unit} on "
            f"{cores} cores, everything included")


def _held_so_far(store: Any) -> int:
    """Messages ever held in the inbox of this (fresh) database: its id sequence."""
    with store.transaction() as tx:
        return int(store.execute(tx, "SELECT last_value FROM syslog_inbox_id_seq").fetchone()[0])


def bundle(sample: list[dict]) -> bytes:
    """A batch Bundle of ``sample`` rendered as BALP AuditEvents (each ``id`` its event's)."""
    return orjson.dumps({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {**to_audit_event(e, resource_id=e["event_id"]), "id": e["event_id"]},
         "request": {"method": "POST", "url": "AuditEvent"}} for e in sample]})


def stages(sample: list[dict], fresh: bool = False) -> str:
    """Where one AuditEvent of a Bundle spends the server's FHIR-only time, one core, in
    this process, as the service does it once it has seen the sender's shapes: parsing
    the Bundle, validating, mapping to the contract event, deriving its event id, and
    the contract checks every ingested event gets (the native batch's too). The
    collector tuned as the server's (ledger.runtime.tune_gc). Each Bundle of ``sample``
    (1,000 events each) three times, the best kept; or, ``fresh``, each once, as a
    server meets them (new objects, colder caches), the first only to learn the shapes."""
    from api.formats.codes import derived_event_id
    from api.formats.fhir_audit import MappingMemo, to_event
    from api.formats.fhir_validation import AuditEventValidator
    from ledger.event import validate_batch
    from ledger.runtime import tune_gc

    tune_gc()
    raws = [bundle(sample[i:i + 1000]) for i in range(0, len(sample), 1000)]
    warm = AuditEventValidator()
    for entry in orjson.loads(raws[0])["entry"]:
        warm.problems(entry["resource"])
    runs = raws[1:] if fresh else [raws[0]] * 3
    spent: dict[str, list[float]] = {}
    for raw in runs:
        started = time.perf_counter()
        resources = [entry["resource"] for entry in orjson.loads(raw)["entry"]]
        parsed = time.perf_counter()
        validator = AuditEventValidator()
        for resource in resources:
            assert not validator.problems(resource)
        validated = time.perf_counter()
        memo = MappingMemo()
        mapped = [to_event(r, event_id=r["id"], default_purpose="HOPERAT", memo=memo)
                  for r in resources]
        mapping = time.perf_counter()
        ids = [derived_event_id("bench", f"fhir:{r['id']}") for r in resources]
        derived = time.perf_counter()
        validate_batch([{**m, "event_id": i} for m, i in zip(mapped, ids, strict=True)])
        checked = time.perf_counter()
        for name, took in (("parse", parsed - started), ("validate", validated - parsed),
                           ("map", mapping - validated), ("event id", derived - mapping),
                           ("contract checks", checked - derived)):
            spent.setdefault(name, []).append(took / len(resources))
    pick = (lambda xs: sum(xs) / len(xs)) if fresh else min
    return ", ".join(f"{name} {pick(took) * 1e6:.1f}" for name, took in spent.items())


def validation_ceiling(sample: list[dict], shared: bool) -> float:
    """AuditEvents a second one core validates with fhir.resources (what every incoming
    AuditEvent costs before it is mapped), measured beside the server: each resource
    whole, or as the service validates a Bundle's (``shared``: once their shapes are
    known, as after a sender's first Bundles, by their values; see
    api/formats/fhir_validation.py)."""
    from api.formats.fhir_validation import AuditEventValidator, audit_event_problems

    resources = [{**to_audit_event(e, resource_id=e["event_id"]), "id": e["event_id"]}
                 for e in sample]
    audit_event_problems(resources[0])  # first use builds the library's validators
    warm = AuditEventValidator()
    for resource in resources:  # the shapes learnt, as a server has after warm-up
        warm.problems(resource)
    validator = AuditEventValidator()
    started = time.perf_counter()
    for resource in resources:
        assert not (validator.problems(resource) if shared else audit_event_problems(resource))
    return len(resources) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--atna", type=int, default=8_000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    print(describe_host(), flush=True)
    print(f"nproc {os.cpu_count()}; {sys.version.split()[0]}; serve --workers {args.workers}",
          flush=True)
    sample = events(args.events)
    fhir_events = [{**e, "event_id": str(uuid.uuid4())} for e in sample]
    url = create_pg_database()
    try:
        with TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            pki = Pki(tmp)
            migrate(url)
            key = provision_key(url, roles=["ingest"], name="atna-sender")
            port = free_port()
            env = {"LEDGER_DATABASE_URL": url, "LEDGER_KEY_FILE": str(tmp / "keys.json"),
                   "LEDGER_LOG_LEVEL": "warning", "LEDGER_PROJECTIONS": "off",
                   "LEDGER_SYSLOG_TLS": f"127.0.0.1:{port}",
                   "LEDGER_SYSLOG_CERT": str(pki.server[0]),
                   "LEDGER_SYSLOG_KEY": str(pki.server[1]), "LEDGER_SYSLOG_CA": str(pki.ca)}
            with ServerProcess(env, api_key=key,
                               args=("--workers", str(args.workers))) as server:
                native, native_cpu = timed_posts(server, "/v1/events/batch", [
                    orjson.dumps({"events": sample[i:i + 1000]})
                    for i in range(0, len(sample), 1000)], args.clients, key, len(sample))
                line("native batch (1,000 a request)", f"{native:,.0f} ev/s")
                print(f"  CPU an event: {native_cpu}", flush=True)
                bundles = [bundle(fhir_events[i:i + 1000])
                           for i in range(0, len(fhir_events), 1000)]
                fhir, fhir_cpu = timed_posts(server, "/fhir", bundles, args.clients, key,
                                             len(fhir_events))
                line("FHIR batch Bundle (1,000 AuditEvents)", f"{fhir:,.0f} ev/s",
                     ">= 10,000", fhir >= 10_000)
                print(f"  CPU an event: {fhir_cpu}", flush=True)
                print(f"  {budget(10_000, 'an event')}", flush=True)
                line("  FHIR / native", f"{fhir / native:.0%}")
                line("  fhir.resources validation alone, 1 core",
                     f"{validation_ceiling(fhir_events[:1000], False):,.0f} ev/s")
                line("  as the service validates a Bundle's (warm)",
                     f"{validation_ceiling(fhir_events[:1000], True):,.0f} ev/s")
                print(f"  one AuditEvent of a warm Bundle, one core (us): "
                      f"{stages(fhir_events[:1000])}", flush=True)
                print(f"  one AuditEvent of Bundles not seen before, one core (us): "
                      f"{stages(fhir_events[:6000], fresh=True)}", flush=True)
                held, rate, atna_cpu = atna(url, pki, server, port, args.atna)
                line(f"ATNA over TLS, {SENDERS} senders, in the ledger", f"{rate:,.0f} msg/s",
                     ">= 5,000", rate >= 5_000)
                print(f"  CPU a message: {atna_cpu}", flush=True)
                print(f"  {budget(5_000, 'a message')}", flush=True)
                line("  held (durable, the next frame read)", f"{held:,.0f} msg/s")
                line("  ATNA / native", f"{rate / native:.0%}")
    finally:
        drop_pg_database(url)


if __name__ == "__main__":
    main()
