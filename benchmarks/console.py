"""Console pages over HTTP: p50/p95 per page for a patient with 1,000 accesses.

Starts ``phi-ledger serve`` on a fresh PostgreSQL database (or ``--database-url``),
loads ``--events`` background entries over many patients plus ``--accesses`` entries on
one patient (spread over ``--users`` users), signs a person in through the console's own
form (password + TOTP), chooses a purpose, and requests each page ``--repeat`` times,
one at a time. Every page includes its SVG; every PHI page records its reads.

    .venv/bin/python -m benchmarks.console --events 100000 --repeat 40
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import secrets
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from api.auth.credentials import totp_code, totp_step
from benchmarks.host import describe as describe_host
from benchmarks.support import (
    ServerProcess,
    create_pg_database,
    drop_pg_database,
    make_event,
    provision_user,
)
from ledger.settings import Settings

# Per run, so that a reused database (--database-url) gets a fresh person and patient.
RUN = secrets.token_hex(3)
USER = f"bench-{RUN}"
PATIENT = f"MRN-BENCH-{RUN}"
PASSWORD = "correct horse battery staple"


def _events(total: int, accesses: int, users: int) -> list[dict]:
    start = datetime(2026, 9, 1, tzinfo=UTC)
    rng = random.Random(7)
    out = []
    for _ in range(total):
        at = start + timedelta(seconds=rng.randrange(90 * 86400))
        out.append(make_event(patient={"id": f"MRN-{rng.randrange(200_000):07d}"},
                              actor={"id": f"agent-{rng.randrange(500):04d}", "kind": "user"},
                              occurred_at=at.isoformat()))
    for i in range(accesses):
        at = start + timedelta(seconds=rng.randrange(90 * 86400))
        action = "disclose" if i % 50 == 0 else "read"
        extra = {"disclosure": {"recipient": {"name": f"Clinic {i}", "kind": "provider"},
                                "description": "records", "encrypted": True},
                 "purpose": "LEGAL"} if action == "disclose" else {}
        out.append(make_event(patient={"id": PATIENT}, action=action,
                              actor={"id": f"agent-{i % users:04d}", "kind": "user"},
                              occurred_at=at.isoformat(), **extra))
    return out


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    if found is None:
        raise RuntimeError("the console's form carries no csrf field")
    return found.group(1)


def _sign_in(base: str, seed: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=60)
    form = client.get("/console/sign-in")
    csrf = _csrf(form.text)
    r = client.post("/console/sign-in", data={
        "username": USER, "password": PASSWORD, "csrf": csrf, "next": "/console",
        "totp": totp_code(seed, totp_step(datetime.now(UTC)))})
    assert r.status_code in (200, 303), r.text
    page = client.get("/console/purpose")
    csrf = _csrf(page.text)
    client.post("/console/purpose", data={"purpose": "HOPERAT", "csrf": csrf,
                                          "next": "/console"})
    return client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--accesses", type=int, default=1000)
    parser.add_argument("--users", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    url = args.database_url or create_pg_database()
    tmp = Path(tempfile.mkdtemp())
    try:
        # A kept database keeps its key ring too (LEDGER_KEY_FILE), or its entries cannot open.
        key_file = Path(os.environ.get("LEDGER_KEY_FILE") or tmp / "keys.json")
        settings = Settings(database_url=url, key_file=key_file)
        seed = provision_user(settings, USER, PASSWORD,
                              roles=["auditor", "investigator", "verifier"])
        env = {"LEDGER_DATABASE_URL": url, "LEDGER_KEY_FILE": str(key_file),
               "LEDGER_LOG_LEVEL": "warning", "LEDGER_RATE_READ": "100000"}
        with ServerProcess(env) as server:
            events = _events(args.events, args.accesses, args.users)
            started = time.perf_counter()
            with server.client(timeout=300) as api:
                last = 0
                for i in range(0, len(events), 1000):
                    r = api.post("/v1/events/batch", json={"events": events[i:i + 1000]})
                    assert r.status_code == 201, r.text
                    last = r.json()["receipts"][-1]["seq"]
                api.get(f"/v1/patients/{PATIENT}/accesses", params={
                    "purpose": "HOPERAT", "min_seq": last, "wait_ms": 10000, "limit": 1})
                # A breach investigation over the patient's quarter, for its page.
                r = api.post("/v1/investigations", json={
                    "title": "bench", "discovered_at": "2026-12-01T00:00:00Z",
                    "scope": {"patients": [PATIENT], "from": "2026-09-01T00:00:00Z",
                              "to": "2026-12-01T00:00:00Z"}})
                assert r.status_code == 201, r.text
                investigation = r.json()["investigation_id"]
            print(f"loaded {len(events)} entries in {time.perf_counter() - started:.1f} s")
            client = _sign_in(server.url, seed)
            pages = {"patient": f"/console/patients/{PATIENT}",
                     "accounting letter": f"/console/patients/{PATIENT}/accounting",
                     "user": "/console/users/agent-0001", "ledger": "/console/ledger",
                     "alerts": "/console/alerts", "investigations": "/console/investigations",
                     "investigation": f"/console/investigations/{investigation}",
                     "home": "/console"}
            print(f"host: nproc={os.cpu_count()} {platform.processor() or platform.machine()}"
                  f" {_cpu_model()}; {describe_host()}")
            for name, path in pages.items():
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    r = client.get(path)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert r.status_code == 200, (path, r.status_code)
                times.sort()
                p50, p95 = (times[min(len(times) - 1, int(q * len(times)))] for q in (0.5, 0.95))
                print(f"{name:18} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  "
                      f"({len(r.content) // 1024} KiB)")
    finally:
        if not args.database_url:
            drop_pg_database(url)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


if __name__ == "__main__":
    main()
