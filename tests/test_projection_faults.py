"""A projection interrupted anywhere, or run twice at once, still ends with the right views.

* In process: a view that writes part of its rows and then raises, on its Nth batch
  (through ``step`` and through ``catch_up``). Its transaction must roll back: no row of
  that batch in the view, its position not moved; every view holds exactly the fold of the
  entries up to its own committed position (the brute-force oracle of
  tests/test_projection_model.py, cut there); a new projector resumes from there to
  tables equal to a clean rebuild.
* A real process: ``phi-ledger project`` over a 20,000-entry ledger (the demo day plus
  crypto-shreds), SIGKILLed three times part-way (positions polled from outside). After
  each kill every view holds exactly the rows of the entries up to its committed
  position; ``project --once`` then finishes, and ``phi-ledger rebuild`` changes nothing.
* Two projectors at once (threads, each with its own connections, while events keep
  arriving; and two ``project --once`` processes) never apply an entry twice: the tables
  equal a rebuild and ``view_accesses`` has exactly one row per entry.
* ``rebuild VIEW`` beside a running follower (the README's "a rebuild beside a running
  service"): neither fails, and the tables end equal to a rebuild.

All run on SQLite and PostgreSQL (``database_url``). A PostgreSQL restart is out of scope
here (see tests/test_outage.py for the database going away under the writer).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

import pytest

from api.services import Services
from api.workload import Workload
from api.workload.monitoring import MonitoredService
from ledger.clock import utc_now
from ledger.settings import Settings
from ledger.shredding import shred_patient
from ledger.store import LedgerStore, open_store
from projections.runner import Projector, all_views
from projections.view import Change, View
from tests.support import ROOT, envelope_of
from tests.test_projection_model import (
    assert_tables_equal,
    entries_of,
    oracle,
    snapshot,
)

LEDGER = "default"
SEED = 11


class Injected(BaseException):
    """The fault this module injects: a crash of the process in the middle of a batch
    (a BaseException, as SystemExit and KeyboardInterrupt are). An error of one entry is
    not a crash: the projector sets that entry aside and goes on (see
    tests/test_projection_quarantine.py)."""


class CrashingView(View):
    """``inner``, except that its ``fail_on``-th apply writes the first half of the batch's
    rows and then raises -- a crash in the middle of a batch."""

    def __init__(self, inner: View, fail_on: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.tables = inner.tables
        self.fail_on = fail_on
        self.calls = 0
        self.rows_written_before_crash: int | None = None

    def _count(self, tx: Any, sql: Any) -> int:
        tx.execute(sql(f"SELECT count(*) FROM {self.tables[0]}"))
        return int(tx.fetchone()[0])

    def apply(self, tx: Any, sql: Any, changes: Sequence[Change]) -> None:
        self.calls += 1
        if self.calls != self.fail_on:
            self.inner.apply(tx, sql, changes)
            return
        before = self._count(tx, sql)
        self.inner.apply(tx, sql, changes[: max(1, len(changes) // 2)])
        self.rows_written_before_crash = self._count(tx, sql) - before
        raise Injected(f"{self.name} crashed in batch {self.calls}")

    def clear(self, tx: Any) -> None:
        self.inner.clear(tx)


def post_workload(svc: Services, n: int, *, shred_every: int = 0, batch: int = 250) -> int:
    """The seeded demo workload through the real ingest path, crypto-shredding a patient
    of the last batch every ``shred_every`` batches; the number of entries written."""
    events = list(Workload(seed=SEED).events(n))
    written = 0
    for i, start in enumerate(range(0, n, batch)):
        chunk = events[start : start + batch]
        written += len(svc.ingest.record_sync(LEDGER, chunk, batch=True).receipts)
        if shred_every and i % shred_every == shred_every - 1:
            mrn = next(e["patient"]["id"] for e in reversed(chunk) if e.get("patient"))
            shred_patient(svc.store, envelope_of(svc), LEDGER, mrn, actor="privacy-1",
                          reason="REQ-9", clock=utc_now)
            written += 1
    return written


def entry_count(store: LedgerStore) -> int:
    return store.head(LEDGER).seq


def assert_equals_a_rebuild(store: LedgerStore, what: str) -> dict[str, Any]:
    """Snapshot, rebuild every view from scratch, snapshot again: equal. Also one access
    row per entry. Returns the rebuilt snapshot."""
    before = snapshot(store)
    Projector(store).rebuild()
    after = snapshot(store)
    assert_tables_equal(before, after, what)
    assert len(after["view_accesses"]) == entry_count(store), what
    return after


# -- (a) a crash inside a batch, in process ------------------------------------------------


@pytest.mark.parametrize("crashing", ["patients", "accesses", "disclosures", "workforce"])
@pytest.mark.parametrize("fail_on", [1, 4])
def test_a_view_crashing_mid_batch_rolls_the_whole_batch_back(
    svc: Services, crashing: str, fail_on: int
) -> None:
    total = post_workload(svc, 1200, shred_every=2)
    views = [CrashingView(v, fail_on) if v.name == crashing else v for v in all_views()]
    victim = next(v for v in views if isinstance(v, CrashingView))
    projector = Projector(svc.store, views, batch=97)

    steps = 0
    while True:
        tables, positions = snapshot(svc.store), projector.positions()
        try:
            read = projector.step()
        except Injected:
            break
        assert read > 0, "the ledger ran out before the injected crash"
        steps += 1
    assert steps == fail_on - 1
    if crashing == "accesses":  # an insert-only view: its half batch really was written
        assert victim.rows_written_before_crash and victim.rows_written_before_crash > 0
    # Nothing of the failed batch is left in the crashed view, its position did not move,
    # and every view holds exactly what its position says.
    assert projector.positions()[crashing] == positions[crashing]
    assert_tables_equal(snapshot(svc.store), tables, "after the crash", VIEW_TABLES[crashing])
    assert_consistent_with_positions(svc.store, "after the crash")

    # A new projector resumes where the last commit left off.
    resumed = Projector(svc.store, batch=500)
    resumed.catch_up()
    assert set(resumed.positions().values()) == {svc.store.last_notification()}
    rebuilt = assert_equals_a_rebuild(svc.store, "resumed vs rebuild")
    assert len(rebuilt["view_accesses"]) == total


def test_a_crash_inside_catch_up_loses_nothing(svc: Services) -> None:
    """The same through ``catch_up``, where each view commits its own batches (on
    PostgreSQL in its own thread): the crashing view stops at its last commit, the others
    may run on, and every view holds exactly the rows of the entries up to its position."""
    post_workload(svc, 1000, shred_every=2)
    views = [CrashingView(v, 3) if v.name == "disclosures" else v for v in all_views()]
    projector = Projector(svc.store, views, batch=150)
    with pytest.raises(Injected):
        projector.catch_up()
    positions = assert_consistent_with_positions(svc.store, "after a crash in catch_up")
    entries = [n for n, _ in svc.store.notifications(0, 10_000)]
    assert positions["disclosures"] == entries[2 * 150 - 1]  # two batches, then the crash
    # Every view stopped at the end of a batch it committed whole ...
    ends = {0, entries[-1], *entries[150 - 1::150]}
    assert all(at in ends for at in positions.values()), positions
    if svc.store.dialect == "sqlite":
        # ... and SQLite's one lane applies the views in turn: those before the crashing
        # view took the third batch, those after it did not. On PostgreSQL each view has
        # its own thread, so where the others stopped is a race (asserted only above).
        assert positions["accesses"] == entries[3 * 150 - 1]
        assert positions["workforce"] == entries[2 * 150 - 1]
    Projector(svc.store, batch=400).catch_up()
    assert_equals_a_rebuild(svc.store, "after a crash in catch_up")


# -- (b) SIGKILL of a real `phi-ledger project` ----------------------------------------------


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return env | {"LEDGER_DATABASE_URL": settings.database_url,
                  "LEDGER_KEY_FILE": str(settings.key_file), "LEDGER_LOG_FORMAT": "json",
                  **extra}


def cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def committed_entries(store: LedgerStore, upto: int) -> list[Change]:
    """Every entry whose notification id is at most ``upto``."""
    out: list[Change] = []
    after = 0
    while found := store.notifications(after, 5000):
        out.extend(Change.of(n, raw) for n, raw in found if n <= upto)
        if found[-1][0] >= upto:
            break
        after = found[-1][0]
    return out


VIEW_TABLES = {"patients": ("view_patients",), "accesses": ("view_accesses",),
               "disclosures": ("view_disclosures",),
               "workforce": ("view_workforce", "view_partners")}


def assert_consistent_with_positions(store: LedgerStore, what: str) -> dict[str, int]:
    """Each view holds exactly the fold of the entries up to its own committed position
    (the brute-force oracle of tests/test_projection_model.py, cut there): nothing of a
    batch whose position did not move, all of every batch whose position did."""
    positions = Projector(store).positions()
    tables = snapshot(store)
    committed = committed_entries(store, max(positions.values()))
    assert [c.seq for c in committed] == list(range(1, len(committed) + 1)), "one ledger"
    read = {LEDGER: entries_of(store, LEDGER)}
    folds: dict[int, dict[str, Any]] = {}
    for view, position in positions.items():
        if view not in VIEW_TABLES:
            continue  # the oracle folds these four; alerts and investigations: own tests
        upto = sum(1 for c in committed if c.position <= position)
        if upto not in folds:
            folds[upto] = oracle(store, (LEDGER,), {LEDGER: upto}, read)
        assert_tables_equal(tables, folds[upto], f"{what}: {view} at {position}",
                            VIEW_TABLES[view])
    return positions


def test_sigkill_of_phi_ledger_project_mid_way_then_restart(settings: Settings) -> None:
    env = env_for(settings)
    demo = cli(env, "demo", "--events", "20000", "--seed", str(SEED), "--batch", "1000")
    assert demo.returncode == 0, demo.stderr
    for mrn in sorted({e["patient"]["id"] for e in MonitoredService(seed=SEED).events(2000)
                       if e.get("patient")})[:3]:
        shredded = cli(env, "shred", "--patient", mrn, "--reason", "REQ-1", "--yes")
        assert shredded.returncode == 0, shredded.stderr

    store = open_store(settings.database_url)
    try:
        total = store.last_notification()
        assert entry_count(store) == 20003
        watcher = Projector(store)
        reached = 0
        for cycle, fraction in enumerate((0.2, 0.5, 0.8), 1):
            proc = subprocess.Popen([sys.executable, "-m", "api.cli", "project"], cwd=ROOT,
                                    env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 120
                while (low := min(watcher.positions().values())) < max(
                        reached + 1, fraction * total):
                    assert proc.poll() is None, f"project exited early ({proc.returncode})"
                    assert time.monotonic() < deadline, "project made no progress"
                    time.sleep(0.005)
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
            positions = assert_consistent_with_positions(store, f"after kill {cycle}")
            reached = min(positions.values())
            assert low <= reached < total, (
                f"kill {cycle} came after the projection had finished: {positions}")

        finished = cli(env, "project", "--once")
        assert finished.returncode == 0, finished.stderr
        # `project` also runs the monitoring watch: the demo's alerts make it append the
        # entry naming the rule set (once, whichever process wrote it).
        head = store.last_notification()
        assert head == total + 1
        assert set(watcher.positions().values()) == {head}
        projected = snapshot(store)
        assert len(projected["view_accesses"]) == 20004

        rebuilt = cli(env, "rebuild")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert_tables_equal(projected, snapshot(store), "killed and resumed vs `rebuild`")
    finally:
        store.close()


# -- (c) two projectors at once --------------------------------------------------------------


def run_threads(targets: Sequence[Any]) -> list[str]:
    """Run each target in its own thread; the tracebacks of those that raised."""
    errors: list[str] = []

    def guard(target: Any) -> None:
        try:
            target()
        except BaseException as error:
            # The store hides the driver's message (it may quote values); a test may see it.
            errors.append(f"{traceback.format_exc()}caused by: {error.__context__!r}")

    threads = [threading.Thread(target=guard, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


def test_two_projector_threads_at_once_never_apply_an_entry_twice(
    svc: Services, settings: Settings
) -> None:
    post_workload(svc, 600)
    appending = threading.Event()
    appending.set()

    def appender() -> None:
        try:
            events = list(Workload(seed=SEED + 1).events(3000))
            for start in range(0, len(events), 150):
                svc.ingest.record_sync(LEDGER, events[start : start + 150], batch=True)
        finally:
            appending.clear()

    def projector(batch: int) -> Any:
        def run() -> None:
            store = open_store(settings.database_url)  # its own connections, like a process
            try:
                p = Projector(store, batch=batch)
                while appending.is_set():
                    p.catch_up()
                p.catch_up()
            finally:
                store.close()
        return run

    errors = run_threads([appender, projector(61), projector(89)])
    assert not errors, "\n".join(errors)
    Projector(svc.store).catch_up()
    rebuilt = assert_equals_a_rebuild(svc.store, "two projector threads vs rebuild")
    assert len(rebuilt["view_accesses"]) == 3600


def test_two_project_processes_at_once(svc: Services, settings: Settings) -> None:
    post_workload(svc, 8000, shred_every=8)
    env = env_for(settings)
    procs = [subprocess.Popen([sys.executable, "-m", "api.cli", "project", "--once"], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode(errors="replace")
    assert set(Projector(svc.store).positions().values()) == {svc.store.last_notification()}
    assert_equals_a_rebuild(svc.store, "two `project --once` processes vs rebuild")


@pytest.mark.parametrize("view", ["accesses", "disclosures", "patients"])
def test_two_projectors_of_one_view_starting_together(
    svc: Services, settings: Settings, view: str
) -> None:
    """Two projectors of the same single view (two ``rebuild VIEW`` at once, or a rebuild
    beside a follower whose other views are current) released at the same moment, three
    times over: neither fails and every entry is applied once."""
    post_workload(svc, 2000, shred_every=3)
    Projector(svc.store).catch_up()

    def projector(start: threading.Barrier) -> Any:
        def run() -> None:
            store = open_store(settings.database_url)
            try:
                p = Projector(store, [v for v in all_views() if v.name == view], batch=40)
                start.wait(30)
                p.catch_up()
            finally:
                store.close()
        return run

    for round_ in range(3):
        # As before the view's first projection: no rows, no position.
        with svc.store.transaction() as tx:
            for table in next(v for v in all_views() if v.name == view).tables:
                tx.execute(f"DELETE FROM {table}")
            tx.execute(svc.store.sql(
                "DELETE FROM notification_tracking WHERE application_name = %s"), (view,))
        start = threading.Barrier(2)
        errors = run_threads([projector(start), projector(start)])
        assert not errors, f"round {round_}:\n" + "\n".join(errors)
        assert_equals_a_rebuild(svc.store, f"two {view} projectors, round {round_}")


@pytest.mark.parametrize("view", ["accesses", "patients", "every view"])
def test_rebuilding_one_view_beside_a_running_follower(
    svc: Services, settings: Settings, view: str
) -> None:
    post_workload(svc, 3000)
    Projector(svc.store).catch_up()
    stop = threading.Event()
    follower_store = open_store(settings.database_url)
    follower = Projector(follower_store, batch=200)

    def follow() -> None:
        follower.follow(stop, poll=0.01)

    def rebuild_while_appending() -> None:
        try:
            events = list(Workload(seed=SEED + 2).events(1600))
            for start in range(0, len(events), 200):
                svc.ingest.record_sync(LEDGER, events[start : start + 200], batch=True)
                # Every view: the follower moves its positions together, and must take
                # their rows in the order the rebuild does (else a deadlock).
                Projector(svc.store, batch=250).rebuild(None if view == "every view" else [view])
        finally:
            stop.set()

    try:
        errors = run_threads([follow, rebuild_while_appending])
    finally:
        stop.set()
        follower_store.close()
    assert not errors, "\n".join(errors)
    Projector(svc.store).catch_up()
    assert_equals_a_rebuild(svc.store, f"rebuild {view} beside a follower vs rebuild")


def test_fault_helpers_can_fail(svc: Services) -> None:
    """Guards the module: an extra access row is a difference from a rebuild."""
    post_workload(svc, 50)
    Projector(svc.store).catch_up()
    with svc.store.transaction() as tx:
        tx.execute(svc.store.sql("DELETE FROM view_accesses WHERE seq = %s"), (7,))
    with pytest.raises(AssertionError, match="view_accesses rows missing"):
        assert_equals_a_rebuild(svc.store, "tampered")


def test_positions_moved_together_fail_together_when_one_was_moved(svc: Services) -> None:
    """A follower moves the positions of the views that stand at one place in one
    statement; if another projector moved any of them meanwhile, nothing of the batch is
    applied to any view and the positions stay where the other left them."""
    post_workload(svc, 300)
    projector = Projector(svc.store)
    projector.catch_up()
    at = projector.positions()
    assert len(set(at.values())) == 1, "every view caught up to one place"
    more = list(Workload(seed=SEED + 7).events(40))
    svc.ingest.record_sync(LEDGER, more, batch=True)
    before = snapshot(svc.store)
    # Another projector moved one view (as its compare-and-set would) a moment ago.
    elsewhere = "disclosures"
    with svc.store.transaction() as tx:
        tx.execute(svc.store.sql("UPDATE notification_tracking SET notification_id = %s"
                                 " WHERE application_name = %s"), (at[elsewhere] + 1, elsewhere))
    read, moved = projector._step(at)
    assert (read, moved) == (0, None)
    assert snapshot(svc.store) == before, "no view applied any of the batch"
    after = projector.positions()
    assert after[elsewhere] == at[elsewhere] + 1
    assert {v: p for v, p in after.items() if v != elsewhere} == {
        v: p for v, p in at.items() if v != elsewhere}
    # The follower's own catch-up then reads the positions again and finishes the job.
    assert projector.catch_up() > 0
    assert len(set(projector.positions().values())) == 1
