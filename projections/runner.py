"""The projector: feeds every view the entries it has not applied yet, exactly once.

Positions are notification ids (the store's commit order over every ledger), kept per
view in the eventsourcing library's single-row ``notification_tracking`` table. Each view
applies a batch in one transaction that also moves its position with a compare-and-set
on the position the batch was read from (views are independent: on PostgreSQL each
catches up in its own thread and transactions). So:

* a crash before the commit loses the batch's rows *and* the move: it is applied again;
* a crash after it has applied both: nothing is applied twice;
* two projectors at once (two processes, or a rebuild beside a running service) never
  both apply a batch: the second compare-and-set finds the position moved and its
  transaction is rolled back.

On PostgreSQL the follower sleeps on LISTEN/NOTIFY (every append notifies); on SQLite it
polls. Either way it reads the entries in batches, never one at a time.

No single entry stops a view. A batch that fails while the database answers is applied
again entry by entry, each in a savepoint; an entry that still fails with an error that
blames a value of it is set aside in ``projection_quarantine`` (projections/quarantine.py)
in the transaction that moves the view past it, and the view goes on. An entry that
cannot even be decoded (a time that overflows when converted to UTC) is set aside for
every view that reads its action. A database that does not answer is an outage, never
an entry's fault: the batch is left as it was, and the follower pauses and retries.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from queue import Queue
from typing import Any, NamedTuple

import structlog

from ledger.canonical import parse
from ledger.protection import child_environment, protection_from_settings
from ledger.runtime import tune_gc
from ledger.settings import Settings
from ledger.store.base import LedgerStore, StoreUnavailable
from projections import indexes, quarantine
from projections.accesses import AccessesView
from projections.alerts import AlertsView
from projections.disclosures import DisclosuresView
from projections.investigation_view import InvestigationsView
from projections.patients import PatientsView
from projections.view import Change, Sql, View, concerns, wanted_actions
from projections.workforce import WorkforceView

log = structlog.get_logger("projections")

BATCH = 2000
# Behind by at least this many entries, a PostgreSQL catch-up splits its views over this
# many processes (see Projector._catch_up_in_processes).
PROCESS_BACKLOG = 200_000
PROCESSES = 2
# Relative work per entry, for splitting views over processes (measured: accesses makes a
# row of every entry; patients reads and rewrites records; the others touch few entries).
VIEW_WEIGHTS = {"accesses": 3, "patients": 2, "alerts": 3, "disclosures": 1, "workforce": 1}
PR_SET_PDEATHSIG = 1
PARENT_ENV = "PHI_LEDGER_PROJECTOR_PID"  # which process a helper must die with
INDEX_CHECK_SECONDS = 60.0  # how often a follower looks for indexes left to build
# A follower that found fewer entries than this waits so long after the next notification
# before it reads: every batch costs a handful of statements whatever its size, and at a
# few hundred one-entry commits a second those statements took a third of a core.
GATHER_BELOW = 100
GATHER_SECONDS = 0.02


def all_views(protection: Any | None = None) -> list[View]:
    """Every view the service keeps, in the order they are applied. ``protection``
    opens what monitoring must compare (see projections.alerts.Sight)."""
    return [PatientsView(), AccessesView(), DisclosuresView(), WorkforceView(),
            AlertsView(protection), InvestigationsView()]


def process_groups(views: Sequence[View], processes: int) -> list[list[View]]:
    """``views`` split into at most ``processes`` groups of about equal work (by
    :data:`VIEW_WEIGHTS`), heaviest first."""
    groups: list[list[View]] = [[] for _ in range(min(processes, len(views)))]
    loads = [0] * len(groups)
    for view in sorted(views, key=lambda v: -VIEW_WEIGHTS.get(v.name, 1)):
        lightest = loads.index(min(loads))
        groups[lightest].append(view)
        loads[lightest] += VIEW_WEIGHTS.get(view.name, 1)
    return [group for group in groups if group]


def _catch_up_views(database_url: str, names: list[str], batch: int) -> None:
    """A projection process: catch the named views up, then exit."""
    from ledger.store import open_store

    _die_with_parent()
    tune_gc()
    store = open_store(database_url)
    try:
        protection = None
        settings = Settings.from_env()
        if "alerts" in names and (settings.keys_json or settings.unsafe_plaintext):
            protection = protection_from_settings(settings, store)
        views = [view for view in all_views(protection) if view.name in names]
        Projector(store, views, batch=batch, processes=1).catch_up()
        # A rebuild's indexes of these views, built here as soon as their rows are in:
        # the sorts then overlap the slowest helper's last stretch instead of all
        # following it (an accesses index of 10M rows takes ~20 s).
        indexes.restore(store, indexes.pending(store, [t for v in views for t in v.tables]),
                        building=lambda name: log.info("view_index_building", index=name))
    finally:
        store.close()


def _die_with_parent() -> None:
    # A projector killed outright (SIGKILL) must not leave its helpers writing on: a
    # restarted one would then compete with them (safely, but slowly and confusingly).
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the helpers finish their catch-up
        return
    # Killed before the line above ran, the projector is not there to signal us.
    if str(os.getppid()) != os.environ.get(PARENT_ENV, str(os.getppid())):
        os._exit(1)


class Broken(NamedTuple):
    """An entry that could not be decoded into a :class:`Change` (its ledger and seq
    when they could be read), and why, as :func:`quarantine.error_text` puts it."""

    position: int
    ledger: str | None
    seq: int | None
    stored: bytes
    error: str


def _broken(position: int, stored: bytes, error: Exception) -> Broken:
    ledger: str | None = None
    seq: int | None = None
    try:
        entry = parse(stored)
        if isinstance(entry.get("ledger"), str):
            ledger = entry["ledger"][:63]
        if isinstance(entry.get("seq"), int) and not isinstance(entry.get("seq"), bool):
            seq = entry["seq"]
    except Exception:  # not even JSON: the position alone names it
        pass
    return Broken(position, ledger, seq, stored, quarantine.error_text(error))


def decode(found: Sequence[tuple[int, bytes]], wanted: frozenset[str] | None = None,
           ) -> tuple[list[Change], list[Broken]]:
    """The entries of ``found`` views reading ``wanted`` actions may read, as changes;
    those that cannot be decoded, apart."""
    changes: list[Change] = []
    broken: list[Broken] = []
    for position, stored in found:
        if not concerns(stored, wanted):
            continue
        try:
            changes.append(Change.of(position, stored))
        except Exception as error:  # any entry's fault: set aside, not fatal
            broken.append(_broken(position, stored, error))
    return changes, broken


class _Batch(NamedTuple):
    """Entries read in one go: those the views read, and where the read began and ended."""

    changes: list[Change]
    first: int
    last: int
    broken: list[Broken]


class ProjectionFailed(Exception):
    """A projection process exited with an error (its own log says which)."""


class PositionMoved(Exception):
    """Another projector applied this batch first; nothing of ours was committed."""


@dataclass(frozen=True, slots=True)
class Progress:
    done: int
    total: int


class Projector:
    """Keeps ``views`` equal to a fold of the ledger in ``store``.

    Guarantees: after :meth:`catch_up` returns, every view has applied every entry that
    was committed before it was called; every entry is applied to a view exactly once,
    however the projector is interrupted or however many run at once.
    """

    def __init__(self, store: LedgerStore, views: Sequence[View] | None = None,
                 *, batch: int = BATCH, processes: int = PROCESSES,
                 process_backlog: int = PROCESS_BACKLOG,
                 protection: Any | None = None) -> None:
        self.store = store
        self.views = list(views) if views is not None else all_views(protection)
        self.batch = batch
        self.processes = processes
        self.process_backlog = process_backlog
        self.sql = Sql(store.dialect, store.sql)
        self._moved = threading.Condition()
        # Why :meth:`follow` is not moving the views right now (None: it is, or it does
        # not run); /readyz answers not ready while it is set.
        self.paused: str | None = None

    # -- positions -------------------------------------------------------------------

    def positions(self) -> dict[str, int]:
        """Each view's position: the newest notification id it has applied (0: none)."""
        names = [v.name for v in self.views]
        with self.store.reading() as curs:
            curs.execute(
                self.store.sql(
                    "SELECT application_name, notification_id FROM notification_tracking"
                    f" WHERE application_name IN ({', '.join(['%s'] * len(names))})"
                ),
                names,
            )
            found = {name: int(position) for name, position in curs.fetchall()}
        return {name: found.get(name, 0) for name in names}

    def lag(self) -> dict[str, int]:
        """How many notification ids each view is behind the newest entry."""
        last = self.store.last_notification()
        return {name: max(0, last - p) for name, p in self.positions().items()}

    def behind(self, now: datetime) -> tuple[dict[str, int], float]:
        """Each view's lag in entries, and how long the oldest entry not yet in every
        view has waited (seconds; 0 when all are current)."""
        positions = self.positions()
        last = self.store.last_notification()
        lag = {name: max(0, last - p) for name, p in positions.items()}
        waiting = 0.0
        oldest = self.store.notifications(min(positions.values()), 1)
        if oldest:
            # The store's own recorded_at, read without decoding the event: the oldest
            # entry may be one no view can apply (its time overflows in UTC).
            recorded = str(parse(oldest[0][1])["recorded_at"]).replace("Z", "+00:00")
            waiting = max(0.0, (now - datetime.fromisoformat(recorded)).total_seconds())
        return lag, waiting

    def _move(self, tx: Any, view: str, was: int, now: int) -> None:
        sql = self.store.sql
        if was == 0:
            tx.execute(sql("INSERT INTO notification_tracking VALUES (%s, %s)"
                           " ON CONFLICT (application_name) DO NOTHING"), (view, now))
            if tx.rowcount == 1:
                return
        tx.execute(
            sql("UPDATE notification_tracking SET notification_id = %s"
                " WHERE application_name = %s AND notification_id = %s"),
            (now, view, was),
        )
        if tx.rowcount != 1:
            raise PositionMoved(view)

    def _move_all(self, tx: Any, was: dict[str, int], now: int) -> None:
        """:meth:`_move` for several views, their rows locked in name order (as a rebuild
        locks them: two transactions locking them in different orders could deadlock).
        Views at one position move in one statement: a follower's batch is often a
        handful of entries, and a round trip per view was most of its cost."""
        names = sorted(was)
        start = was[names[0]] if names else 0
        if len(names) < 2 or start == 0 or any(was[n] != start for n in names):
            for name in names:
                self._move(tx, name, was[name], now)
            return
        marks = ", ".join(["%s"] * len(names))
        if self.store.dialect == "postgresql":
            tx.execute(
                "UPDATE notification_tracking SET notification_id = %s WHERE application_name"
                " IN (SELECT application_name FROM notification_tracking WHERE"
                f" application_name IN ({marks}) AND notification_id = %s"
                " ORDER BY application_name FOR UPDATE)",
                (now, *names, start),
            )
        else:  # one writer at a time: nothing to order
            tx.execute(
                self.store.sql(
                    "UPDATE notification_tracking SET notification_id = %s WHERE"
                    f" application_name IN ({marks}) AND notification_id = %s"),
                (now, *names, start),
            )
        if tx.rowcount != len(names):
            raise PositionMoved(",".join(names))

    # -- applying --------------------------------------------------------------------

    def step(self) -> int:
        """Apply the next batch to every view behind it; the number of entries read."""
        return self._step(self.positions())[0]

    def _step(self, positions: dict[str, int]) -> tuple[int, dict[str, int] | None]:
        """The next batch after ``positions``, applied: the number of entries read and
        the positions after it (None when another projector moved a position first:
        nothing was applied)."""
        found = self.store.notifications(min(positions.values()), self.batch)
        if not found:
            return 0, positions
        moved = self._apply(positions, found)
        return (0, None) if moved is None else (len(found), moved)

    def _apply(
        self, positions: dict[str, int], found: Sequence[tuple[int, bytes]]
    ) -> dict[str, int] | None:
        """Apply ``found`` (read after the lowest of ``positions``) in one transaction;
        the positions after it, or None when another projector got there first."""
        low = min(positions.values())
        changes, broken = decode(found)
        last = found[-1][0]
        moved = dict(positions)
        behind = [view for view in self.views if positions[view.name] < last]
        noted: list[dict[str, Any]] = []
        try:
            with self.store.transaction() as tx:
                if self.store.dialect == "postgresql":
                    # Views and positions commit together, so a crash that loses this
                    # commit loses both and the batch is applied again: no fsync needed.
                    tx.execute("SET LOCAL synchronous_commit = off")
                # Compare-and-set first: a second projector of this batch stops here
                # (on PostgreSQL it waits on the positions' row locks, then finds them
                # moved) before writing a row that would duplicate the first's.
                self._move_all(tx, {view.name: positions[view.name] for view in behind}, last)
                for view in behind:
                    at = positions[view.name]
                    new = [c for c in changes if c.position > at] if at > low else changes
                    self._set_aside(tx, view, at, broken, noted)
                    view.apply(tx, self.sql, new)
        except PositionMoved:
            log.info("projection_batch_skipped", reason="position moved by another projector")
            return None
        except Exception as error:  # an outage is re-raised by _not_an_outage
            self._not_an_outage(error, [view.name for view in behind])
            if not self._apply_entrywise(
                    behind, {view.name: positions[view.name] for view in behind}, last,
                    changes, broken):
                return None
        else:
            self._log_set_aside(noted)
        for view in behind:
            moved[view.name] = last
        with self._moved:
            self._moved.notify_all()
        return moved

    def catch_up(self, progress: Callable[[Progress], None] | None = None) -> int:
        """Apply everything committed so far; the number of entries read.

        Entries are read and decoded once, here, while the views apply the batches before
        -- on PostgreSQL each view in its own thread, connection and transactions (its
        rows and its position commit together), so the database inserts the rows of
        several views at once on several cores. A long way behind on PostgreSQL, the
        views are split over processes first (see :meth:`_catch_up_in_processes`)."""
        target = self.store.last_notification()
        positions = self.positions()
        start = min(positions.values())
        done = 0
        if target - start <= self.batch and progress is None:
            return self._catch_up_in_steps(target, positions)
        if self._worth_processes(target - start):
            done = self._catch_up_in_processes(start, target, progress)
        while True:
            positions = self.positions()
            if min(positions.values()) >= target:
                return done
            read, contested = self._run(positions, start, target, progress)
            done += read
            if contested or read == 0:
                # Another projector holds a batch; let it finish, then look again.
                time.sleep(0.05)

    def _catch_up_in_steps(self, target: int, positions: dict[str, int]) -> int:
        """A follower's usual catch-up, a batch or less: every view in one transaction
        (:meth:`step`), not a thread and a transaction per view -- four commits and four
        thread hand-offs for a handful of entries took more of the interpreter lock than
        applying them. Positions are read once: each batch's commit says where the views
        are next (were one moved meanwhile, the compare-and-set finds out)."""
        done = 0
        while min(positions.values()) < target:
            read, moved = self._step(positions)
            done += read
            if moved is None:
                time.sleep(0.01)  # another projector holds the batch: let it commit
                positions = self.positions()
            elif read == 0:
                return done  # the entries before target are all applied
            else:
                positions = moved
        return done

    def _worth_processes(self, behind: int) -> bool:
        standard = {type(view) for view in all_views()}
        return (self.store.dialect == "postgresql" and self.processes > 1
                and behind >= self.process_backlog and len(self.views) > 1
                and bool(self.store.database_url)
                and all(type(view) in standard for view in self.views))

    def _catch_up_in_processes(self, start: int, target: int,
                               progress: Callable[[Progress], None] | None) -> int:
        """Catch up with the views split over processes, each reading and decoding the
        entries itself; the number of entries the slowest view applied.

        One process's views share one interpreter lock, and decoding entries and making
        rows is Python work: past a few tens of thousands of entries a second the lock,
        not the database, was the limit. Decoding twice on two cores is cheaper than
        waiting for one. Exactly-once holds as ever: each view's batches still commit
        with a compare-and-set on its own position, whichever process applies them."""
        # Each a fresh interpreter running this module (no fork of threads and sockets);
        # the database URL goes by environment, never on a command line others can read.
        env = {**os.environ, "LEDGER_DATABASE_URL": self.store.database_url,
               PARENT_ENV: str(os.getpid())}
        # The helpers open PHI exactly as this projector's views do (or not at all), and
        # never sign a checkpoint, so they are not handed the log's signing keys.
        for name in ("LEDGER_KEYS", "LEDGER_LOG_KEYS", "LEDGER_UNSAFE_PLAINTEXT"):
            env.pop(name, None)
        for view in self.views:
            if isinstance(view, AlertsView):
                env.update(child_environment(view.sight.protection))
        groups = process_groups(self.views, self.processes)
        workers = [
            subprocess.Popen([sys.executable, "-m", "projections.runner", str(self.batch),
                              *(v.name for v in group)], env=env)
            for group in groups
        ]
        try:
            while any(worker.poll() is None for worker in workers):
                time.sleep(0.25)
                if progress is not None:
                    reached = min(self.positions().values())
                    progress(Progress(reached - start, max(target - start, reached - start)))
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.terminate()
                    worker.wait()
        failed = ["+".join(v.name for v in group)
                  for group, worker in zip(groups, workers, strict=True) if worker.returncode]
        if failed:
            raise ProjectionFailed(f"the projection process of {', '.join(failed)} failed")
        return min(self.positions().values()) - start

    def _lanes(self) -> list[list[View]]:
        if self.store.dialect == "postgresql":
            return [[view] for view in self.views]
        # SQLite has one writer at a time: one lane, the views in turn.
        return [list(self.views)]

    def _run(self, positions: dict[str, int], start: int, target: int,
             progress: Callable[[Progress], None] | None) -> tuple[int, bool]:
        at = dict(positions)
        contested = threading.Event()
        failures: list[BaseException] = []
        lanes = self._lanes()
        queues: list[Queue[_Batch | None]] = [Queue(maxsize=4) for _ in lanes]

        def report() -> None:
            if progress is not None:
                reached = min(at.values())
                progress(Progress(reached - start, max(target - start, reached - start)))

        def work(lane: list[View], batches: Queue[_Batch | None]) -> None:
            while (batch := batches.get()) is not None:
                if contested.is_set() or failures:
                    continue  # keep draining: the reader must never block on us
                changes, first, last, broken = batch
                for view in lane:
                    mine = at[view.name]
                    if mine >= last:
                        continue
                    new = (changes if mine < first
                           else [c for c in changes if c.position > mine])
                    try:
                        applied = self._apply_view(view, mine, last, new, broken)
                    except BaseException as error:  # re-raised by the reader below
                        failures.append(error)
                        break
                    if not applied:
                        contested.set()
                        break
                    at[view.name] = last

        workers = [threading.Thread(target=work, args=(lane, batches), daemon=True,
                                    name=f"projection-{lane[0].name}")
                   for lane, batches in zip(lanes, queues, strict=True)]
        for worker in workers:
            worker.start()
        try:
            read = self._feed(queues, min(positions.values()),
                              lambda: contested.is_set() or bool(failures), report)
        finally:
            for batches in queues:
                batches.put(None)
            for worker in workers:
                worker.join()
        if failures:
            raise failures[0]
        report()
        return read, contested.is_set()

    def _feed(self, queues: Sequence[Queue[_Batch | None]], after: int,
              stopped: Callable[[], bool], report: Callable[[], None]) -> int:
        """Read the notifications after ``after`` a batch at a time and hand each batch to
        every lane's queue, until none are left or ``stopped()``; how many were read."""
        wanted = wanted_actions(self.views)
        read = 0
        while not stopped():
            found = self.store.notifications(after, self.batch)
            if not found:
                break
            # Entries none of these views reads are passed over undecoded (decoding
            # was a fifth of a projection process's time); positions still move
            # over them, to the batch's last.
            changes, broken = decode(found, wanted)
            batch = _Batch(changes, found[0][0], found[-1][0], broken)
            for batches in queues:
                batches.put(batch)
            after = batch.last
            read += len(found)
            report()
        return read

    def _apply_view(self, view: View, at: int, last: int, changes: Sequence[Change],
                    broken: Sequence[Broken] = ()) -> bool:
        """One view's share of a batch, with its position, in one transaction; False when
        another projector moved the position first (nothing of ours committed)."""
        noted: list[dict[str, Any]] = []
        try:
            with self.store.transaction() as tx:
                if self.store.dialect == "postgresql":
                    tx.execute("SET LOCAL synchronous_commit = off")  # see _apply
                self._move(tx, view.name, at, last)
                self._set_aside(tx, view, at, broken, noted)
                view.apply(tx, self.sql, changes)
        except PositionMoved:
            log.info("projection_batch_skipped", view=view.name,
                     reason="position moved by another projector")
            return False
        except Exception as error:  # an outage is re-raised by _not_an_outage
            self._not_an_outage(error, [view.name])
            if not self._apply_entrywise([view], {view.name: at}, last, changes, broken):
                return False
        else:
            self._log_set_aside(noted)
        with self._moved:
            self._moved.notify_all()
        return True

    # -- entries a view cannot apply -------------------------------------------------

    def _not_an_outage(self, error: Exception, views: list[str]) -> None:
        """Re-raise :class:`StoreUnavailable` when the database does not answer: a batch
        that failed then failed for that, not for an entry of it."""
        self.store.ping()
        log.warning("projection_batch_failed", views=views,
                    error=quarantine.error_text(error), retry="entry by entry")

    def _set_aside(self, tx: Any, view: View, at: int, broken: Sequence[Broken],
                   noted: list[dict[str, Any]]) -> None:
        """Record the undecodable entries after ``at`` that ``view`` would read."""
        for entry in broken:
            if entry.position > at and concerns(entry.stored, view.actions):
                self._quarantine(tx, view.name, entry.position, entry.ledger, entry.seq,
                                 entry.error, noted)

    def _quarantine(self, tx: Any, view: str, position: int, ledger: str | None,
                    seq: int | None, error: str, noted: list[dict[str, Any]]) -> None:
        """Set one entry aside; ``noted`` collects it, to be logged once committed."""
        quarantine.record(tx, self.sql, view, position, ledger, seq, error,
                          quarantine.now_text())
        noted.append({"view": view, "notification_id": position, "ledger": ledger,
                      "seq": seq, "error": error})

    @staticmethod
    def _log_set_aside(noted: list[dict[str, Any]]) -> None:
        for entry in noted:
            log.error("projection_entry_quarantined", **entry)

    @contextmanager
    def _savepoint(self, tx: Any) -> Iterator[None]:
        """Undo what the block wrote if it raises (the transaction stays usable)."""
        if self.store.dialect == "postgresql":
            with tx.connection.transaction():  # nested: a savepoint
                yield
            return
        tx.execute("SAVEPOINT projection_entry")
        try:
            yield
        except BaseException:
            tx.execute("ROLLBACK TO SAVEPOINT projection_entry")
            tx.execute("RELEASE SAVEPOINT projection_entry")
            raise
        tx.execute("RELEASE SAVEPOINT projection_entry")

    def _apply_entrywise(self, views: Sequence[View], at: dict[str, int], last: int,
                         changes: Sequence[Change], broken: Sequence[Broken]) -> bool:
        """A batch that failed, again: each view's entries one at a time, each in a
        savepoint, in one transaction that moves the views to ``last``. An entry that
        fails while the database answers, with an error that blames a value of it (see
        :func:`quarantine.not_the_entry`), is set aside for that view; anything else is
        raised and nothing is committed. False when another projector moved a position
        first."""
        noted: list[dict[str, Any]] = []
        try:
            with self.store.transaction() as tx:
                if self.store.dialect == "postgresql":
                    tx.execute("SET LOCAL synchronous_commit = off")  # see _apply
                self._move_all(tx, dict(at), last)
                for view in views:
                    self._set_aside(tx, view, at[view.name], broken, noted)
                    for change in changes:
                        if change.position <= at[view.name]:
                            continue
                        try:
                            with self._savepoint(tx):
                                view.apply(tx, self.sql, [change])
                        except Exception as error:  # judged just below
                            if quarantine.not_the_entry(error):
                                raise
                            self.store.ping()  # no answer: an outage, not this entry
                            self._quarantine(tx, view.name, change.position, change.ledger,
                                             change.seq, quarantine.error_text(error), noted)
        except PositionMoved:
            log.info("projection_batch_skipped", views=[view.name for view in views],
                     reason="position moved by another projector")
            return False
        self._log_set_aside(noted)
        return True

    def rebuild(self, names: Sequence[str] | None = None,
                progress: Callable[[Progress], None] | None = None,
                building: Callable[[str], None] | None = None) -> int:
        """Empty the named views (all by default) and project them again from the start;
        on PostgreSQL their secondary indexes are built once the rows are in (each name
        is passed to ``building`` before it is built)."""
        chosen = [v for v in self.views if names is None or v.name in names]
        with self.store.transaction() as tx:
            # Positions back to 0 before the tables are emptied, in name order, as every
            # batch takes them (positions first, then the views' tables): a projector in
            # the middle of a batch holds its positions' rows, so this waits for its
            # commit (whose rows are then emptied too) instead of deadlocking on the
            # tables, and one that comes later finds its position moved. (Set to 0, not
            # deleted: a deleted row cannot be waited on by the next projector's
            # compare-and-set.)
            for view in sorted(chosen, key=lambda v: v.name):
                tx.execute(
                    self.store.sql(
                        "INSERT INTO notification_tracking VALUES (%s, 0)"
                        " ON CONFLICT (application_name) DO UPDATE SET notification_id = 0"),
                    (view.name,),
                )
            for view in chosen:
                if self.store.dialect == "postgresql":
                    # Not DELETE: that leaves every dead row for VACUUM to find.
                    tx.execute(f"TRUNCATE {', '.join(view.tables)}")
                else:
                    view.clear(tx)
            # Every entry is applied again: what could not be, is set aside again.
            quarantine.clear(tx, self.sql, [view.name for view in chosen])
            if self.store.dialect == "postgresql":
                # Rows first, secondary indexes after: one sort each instead of millions
                # of random b-tree inserts (see projections.indexes).
                deferred = indexes.defer(tx, [t for view in chosen for t in view.tables])
        done = Projector(self.store, chosen, batch=self.batch, processes=self.processes,
                         process_backlog=self.process_backlog).catch_up(progress)
        if self.store.dialect == "postgresql":
            indexes.restore(self.store, deferred, building)
        return done

    # -- following -------------------------------------------------------------------

    def follow(self, stop: threading.Event, *, poll: float = 0.1) -> None:
        """Keep the views current until ``stop`` is set: catch up, then apply each new
        batch as it is committed (woken by NOTIFY on PostgreSQL, polling on SQLite).
        An unreachable database is waited out, not fatal."""
        checked = 0.0
        while not stop.is_set():
            try:
                with self.store.listener() as wait:
                    while not stop.is_set():
                        read = self.catch_up()
                        self.paused = None
                        if time.monotonic() - checked > INDEX_CHECK_SECONDS:
                            # A rebuild killed before it built its indexes again.
                            indexes.restore(self.store)
                            checked = time.monotonic()
                        wait(poll)
                        if read < GATHER_BELOW:
                            # A trickle of small commits (reads recorded one page at a
                            # time): let a few gather, and apply them in one batch.
                            stop.wait(GATHER_SECONDS)
            except StoreUnavailable:
                self.paused = "database unavailable"
                log.warning("projection_paused", reason=self.paused)
                stop.wait(1.0)
            except Exception as error:  # the follower must outlive any error
                # Entries a view cannot apply are set aside before this; what is left is
                # the projector's own failure. Say so (readyz) and try again.
                self.paused = f"projection failed ({type(error).__name__})"
                log.error("projection_paused", reason=self.paused,
                          error=quarantine.error_text(error))
                stop.wait(1.0)

    def wait_for(self, position: int, timeout: float) -> bool:
        """Block until every view has applied ``position`` (True), or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while min(self.positions().values()) < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._moved:
                self._moved.wait(min(remaining, 0.01))
        return True


if __name__ == "__main__":
    # A helper of Projector._catch_up_in_processes: BATCH VIEW... Its logs take the form
    # and level its projector's environment sets, like every other process's.
    from ledger.logs import configure_logging
    from ledger.settings import Settings

    _settings = Settings.from_env()
    configure_logging(_settings.log_format, _settings.log_level)
    _catch_up_views(os.environ["LEDGER_DATABASE_URL"], sys.argv[2:], int(sys.argv[1]))
