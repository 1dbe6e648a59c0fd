"""The ATNA listener killed mid-stream (SIGKILL, in its own process) loses nothing it
read: every message it took is in the ledger exactly once, in the dead-letter table or
still held in the inbox, the messages it took are a gap-free prefix of what was sent (one
frame at a time, each durable before the next is read); the restarted listener settles
what was held, and a sender that sends everything again ends with each message recorded
once. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from api.formats.codes import sha256_hex
from api.formats.syslog import frame, syslog_message
from api.syslog.inbox import Inbox
from ledger.entry import Entry
from ledger.protection import protection_from_settings
from ledger.settings import Settings
from ledger.store import open_store
from tests.certs import Pki
from tests.support import ROOT, free_port, provision_key

TOTAL = 300
BAD_EVERY = 10  # every tenth message cannot be mapped: a dead letter


def _message(i: int) -> bytes:
    if i % BAD_EVERY == 0:
        return syslog_message(f'<AuditMessage n="{i}"/>'.encode())
    return syslog_message(f"""<AuditMessage><EventIdentification EventActionCode="E"
 EventDateTime="2026-11-26T08:00:00Z" EventOutcomeIndicator="0"><EventID csd-code="110114"/>
<EventTypeCode csd-code="110122"/></EventIdentification>
<ActiveParticipant UserID="user-{i}" UserIsRequestor="true"/></AuditMessage>""".encode())


def _listener(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "api.cli", "syslog", "--tls",
                                 f"127.0.0.1:{port}"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=out)
    deadline = time.monotonic() + 60  # only a hang fails here
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the listener exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the listener did not come up")


def _send(pki: Pki, port: int, frames: list[bytes]) -> threading.Thread:
    def run() -> None:
        context = pki.client_context("atna-sender")
        try:
            with socket.create_connection(("127.0.0.1", port)) as raw, \
                    context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                for f in frames:
                    tls.sendall(f)
                tls.recv(1)  # until the listener goes away
        except OSError:
            pass  # the listener was killed
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _state(settings: Settings) -> tuple[list[int], list[int], list[int]]:
    """(indexes in the ledger, in order; indexes dead-lettered; indexes held in the
    inbox, not yet settled)."""
    store = open_store(settings.database_url)
    try:
        protection = protection_from_settings(settings, store)
        entries = [Entry.decode(r) for r in store.read("default", 0, 100_000)]
        events = protection.reveal_many("default", [e.event for e in entries])
        with store.transaction() as tx:
            digests = [r[0] for r in store.execute(
                tx, "SELECT sha256 FROM dead_letters ORDER BY id").fetchall()]
        held = Inbox(store, getattr(protection, "ring", None)).held(0, 100_000)
    finally:
        store.close()
    by_digest = {sha256_hex(_message(i)): i for i in range(TOTAL)}
    return ([int(e["actor"]["id"].split("-")[1]) for e in events],
            [by_digest[d] for d in digests],
            [by_digest[sha256_hex(h.frame)] for h in held])


def _read(log: Path) -> list[int]:
    """The messages the listener logged as taken off the stream, in order."""
    by_digest = {sha256_hex(_message(i)): i for i in range(TOTAL)}
    out = []
    for line in log.read_text().splitlines():
        if '"syslog.frame_read"' in line:
            out.append(by_digest[json.loads(line)["sha256"]])
    return out


def _wait(check: Callable[[], object], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "no progress: the listener hangs"
        time.sleep(0.05)


def test_killed_listener_keeps_every_message_it_read(database_url: str, tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    provision_key(database_url, roles=("ingest",), name="atna-sender")
    settings = Settings(database_url=database_url, key_file=tmp_path / "keys.json")
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url,
           "LEDGER_KEY_FILE": str(settings.key_file), "LEDGER_SYSLOG_CERT": str(pki.server[0]),
           "LEDGER_SYSLOG_KEY": str(pki.server[1]), "LEDGER_SYSLOG_CA": str(pki.ca),
           "LEDGER_LOG_LEVEL": "debug", "LEDGER_LOG_FORMAT": "json"}
    log = tmp_path / "listener.log"
    frames = [frame(_message(i)) for i in range(TOTAL)]
    port = free_port()
    proc = _listener(env, port, log)
    try:
        _send(pki, port, frames)
        _wait(lambda: len(_state(settings)[0]) >= 20)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    recorded, dead, held = _state(settings)
    assert len(set(recorded)) == len(recorded)  # exactly once
    taken = sorted(set(recorded + dead + held))  # settled and not yet released: both
    assert taken == list(range(len(taken)))  # a prefix: nothing read was lost
    assert all(i % BAD_EVERY == 0 for i in dead)
    assert len(taken) < TOTAL, "the kill came after the stream ended: nothing was tested"
    read = _read(log)
    # Every message it read is recorded, but the one in hand when it was killed (the next
    # is not read until the last is durable).
    assert read[:len(taken)] == taken and len(read) - len(taken) <= 1

    # Restarted, the listener settles what was held, before anything new is sent.
    proc = _listener(env, port, log)
    try:
        _wait(lambda: not _state(settings)[2])
        recorded, dead, _ = _state(settings)
        assert sorted(recorded + dead) == taken and len(set(recorded)) == len(recorded)
        # the sender reconnects and sends everything again: each message ends up once
        _send(pki, port, frames)
        _wait(lambda: len(_state(settings)[0]) == TOTAL - TOTAL // BAD_EVERY
              and not _state(settings)[2])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    recorded, dead, held = _state(settings)
    assert sorted(recorded) == [i for i in range(TOTAL) if i % BAD_EVERY]
    assert sorted(dead) == list(range(0, TOTAL, BAD_EVERY)) and held == []
