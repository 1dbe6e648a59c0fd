"""Per-patient data keys: created on first use, wrapped under the active KEK, cached
unwrapped for a short while, destroyed by crypto-shredding, rewrapped by rotation.

Each patient of each ledger has at most one data key at a time, stored wrapped in
``patient_keys`` with a random ``key_id`` that the stored events name. Shredding deletes
the row: every event that names that ``key_id`` then reads as erased, and a later event
about the same patient gets a new key (and a new ``key_id``).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ledger.clock import Clock, utc_now
from ledger.crypto.envelope import DataKey, dek_aad, unwrap_key, wrap_key
from ledger.crypto.keyring import KeyRing
from ledger.entry import format_recorded_at
from ledger.store import LedgerStore
from ledger.store.base import select_keyed, send_probe_each

# Unwrapped keys are kept this long. A shred elsewhere does not wait for it: every append
# settles, under the ledger's write lock, the keys it sealed with against the table (see
# ``settle``), and readers use a cached key only while the ledger's shred count is the
# one it was read at (see ``lookup``).
CACHE_SECONDS = 3600.0
CACHE_ENTRIES = 200_000


class DataKeyUnusable(Exception):
    """A wrapped data key does not unwrap: the KEK is wrong or the row is corrupted."""

    def __init__(self, ledger: str, patient_ref: str, kek_id: str) -> None:
        super().__init__(
            f"the data key of patient ref {patient_ref[:12]}... in ledger '{ledger}' does not"
            f" unwrap under KEK {kek_id}: wrong key file, or a corrupted patient_keys row"
        )


@dataclass(frozen=True, slots=True)
class PatientKey:
    key_id: str
    key: DataKey


class DataKeys:
    """The patient_keys table of a store, seen through a key ring."""

    def __init__(self, store: LedgerStore, ring: KeyRing, clock: Clock = utc_now) -> None:
        self.store = store
        self.ring = ring
        self.clock = clock
        # (ledger, ref) -> (expiry, key, the ledger's shred count when the key was read)
        self._cache: OrderedDict[tuple[str, str], tuple[float, PatientKey, int]] = OrderedDict()
        self._lock = threading.Lock()

    # -- the cache ---------------------------------------------------------------------

    # Each takes the lock once for a whole group: per-patient locking was a measurable
    # share of the cost of encryption at ingest.

    def _cached(
        self, ledger: str, refs: list[str], epoch: int | None = None
    ) -> tuple[dict[str, PatientKey], list[str]]:
        """The cached keys of ``refs`` (only those read at shred count ``epoch``, when
        given), and the refs not cached, expired or not known to be current."""
        hits: dict[str, PatientKey] = {}
        missing = []
        now = time.monotonic()
        cache = self._cache
        with self._lock:
            for ref in refs:
                hit = cache.get((ledger, ref))
                if hit is None or hit[0] < now or (epoch is not None and hit[2] != epoch):
                    missing.append(ref)
                    continue
                cache.move_to_end((ledger, ref))
                hits[ref] = hit[1]
        return hits, missing

    def _remember(self, ledger: str, keys: dict[str, PatientKey], epoch: int = -1) -> None:
        """Cache ``keys``, as read at shred count ``epoch`` (-1: not known to be stored)."""
        expiry = time.monotonic() + CACHE_SECONDS
        cache = self._cache
        with self._lock:
            for ref, key in keys.items():
                cache[(ledger, ref)] = (expiry, key, epoch)
                cache.move_to_end((ledger, ref))
            while len(cache) > CACHE_ENTRIES:
                cache.popitem(last=False)

    def forget(self, ledger: str, ref: str) -> None:
        with self._lock:
            self._cache.pop((ledger, ref), None)

    # -- reading and creating ------------------------------------------------------------

    def _unwrap(
        self, ledger: str, ref: str, key_id: str, kek_id: str, wrapped: bytes
    ) -> PatientKey:
        try:
            kek = self.ring.kek(kek_id)
            return PatientKey(key_id, unwrap_key(kek, bytes(wrapped), dek_aad(ledger, ref)))
        except Exception as error:  # KeyRingError (no such KEK) or EnvelopeError
            raise DataKeyUnusable(ledger, ref, kek_id) from error

    def _rows(self, tx: Any, columns: str, ledger: str, refs: list[str]) -> list[Any]:
        return select_keyed(tx, self.store.dialect, self.store.sql,
                            f"SELECT {columns} FROM patient_keys WHERE ledger = %s",
                            "patient_ref", refs, (ledger,))

    def _load(self, tx: Any, ledger: str, refs: list[str]) -> dict[str, PatientKey]:
        return {
            ref: self._unwrap(ledger, ref, key_id, kek_id, wrapped)
            for ref, key_id, kek_id, wrapped in self._rows(
                tx, "patient_ref, key_id, kek_id, wrapped", ledger, refs)
        }

    def current(self, ledger: str, refs: Iterable[str]) -> dict[str, PatientKey]:
        """Each patient's current data key; a patient without one gets a new key, stored
        before anything is sealed under it.

        Keys are made here, in a short transaction of their own, rather than inside the
        append: the append holds the ledger's write lock, and every round trip spent
        there is spent by every writer. A key whose events then fail to commit is left
        unused, which is harmless. When another process makes the same patient's key at
        the same moment, the insert that loses waits for the winner and takes its key."""
        keys, unknown = self._cached(ledger, list(dict.fromkeys(refs)))
        if not unknown:
            return keys
        if self.store.dialect == "postgresql":
            keys.update(self._read_or_make(ledger, unknown))
            return keys
        # Reading needs no transaction of its own, and most are patients seen before:
        # their keys cost two round trips, not four.
        epoch, found = self._read(ledger, unknown)
        keys.update(found)
        missing = [ref for ref in unknown if ref not in found]
        if not missing:
            return keys
        created_at = format_recorded_at(self.clock())
        made = {ref: self._new_key(ledger, ref, created_at) for ref in missing}
        loaded = {ref: key for ref, (key, _) in made.items()}
        stray: set[str] = set()
        with self.store.transaction() as tx:
            self._relax_commit(tx)
            lost = self._insert(tx, [(ledger, ref, *row) for ref, (_, row) in made.items()])
            if lost:
                winners = self._load(tx, ledger, lost)
                loaded.update(winners)
                # A winner already shredded again: ours is not stored, so it stays
                # doubtful and settling replaces it.
                stray = set(lost) - set(winners)
        # Remembered at the shred count read before the keys were: a shred since then
        # shows at settling as a newer count, never as an older one beside a key that
        # is already gone.
        self._remember(ledger, {r: k for r, k in loaded.items() if r not in stray}, epoch)
        self._remember(ledger, {r: loaded[r] for r in stray})
        keys.update(loaded)
        return keys

    def _read_or_make(self, ledger: str, unknown: list[str]) -> dict[str, PatientKey]:
        """:meth:`current` for patients not cached, on PostgreSQL, in one round trip
        (six one at a time): one pipeline reads the shred count, then their stored keys,
        then inserts a new key for each (ON CONFLICT DO NOTHING: a stored key stays) and
        commits. The server runs them in that order. A new key is made for every one of
        ``unknown``; those not inserted are dropped, never stored."""
        created_at = format_recorded_at(self.clock())
        made = {ref: self._new_key(ledger, ref, created_at) for ref in unknown}
        rows = [(ledger, ref, *row) for ref, (_, row) in made.items()]
        with self.store.pipelined_transaction() as tx:
            counted = self.store.cursor_beside(tx)
            self._send_epoch(counted, ledger)
            probed = self.store.cursor_beside(tx)
            send_probe_each(probed, "SELECT patient_ref, key_id, kek_id, wrapped"
                            " FROM patient_keys WHERE ledger = %s", "patient_ref", unknown,
                            (ledger,))
            self._relax_commit(tx)
            inserted = self.store.cursor_beside(tx)
            self._send_insert(inserted, rows)
        # The count first: a shred after it shows at settling as a newer count, never
        # as an older one beside a key that is already gone.
        epoch = self._epoch_of(counted)
        lost = set(self._lost(inserted, rows))
        # Ours where inserted (a stored key found by the probe and inserted over as well
        # was shredded in between: ours is the current one), else the stored one.
        loaded = {ref: key for ref, (key, _) in made.items() if ref not in lost}
        for ref, key_id, kek_id, wrapped in probed.fetchall():
            if ref in lost:
                loaded[ref] = self._unwrap(ledger, ref, key_id, kek_id, wrapped)
        # Neither: another process inserted it between the probe and the insert, which
        # waited for its commit; read now. A winner already shredded again: ours is not
        # stored, so it stays doubtful and settling replaces it.
        late = [ref for ref in unknown if ref in lost and ref not in loaded]
        stray: set[str] = set()
        if late:
            with self.store.reading() as tx:
                winners = self._load(tx, ledger, late)
            loaded.update(winners)
            stray = set(late) - set(winners)
            loaded.update({ref: made[ref][0] for ref in stray})
        self._remember(ledger, {r: k for r, k in loaded.items() if r not in stray}, epoch)
        self._remember(ledger, {r: loaded[r] for r in stray})
        return loaded

    def _relax_commit(self, tx: Any) -> None:
        # A new key need not reach the disk before its events do: every event sealed
        # under it commits later, synchronously, and PostgreSQL's WAL flush at that
        # commit covers this earlier one. Lost in a crash, it had sealed nothing stored.
        if self.store.dialect == "postgresql":
            tx.execute("SET LOCAL synchronous_commit = off")

    def lookup(self, ledger: str, refs: Iterable[str]) -> dict[str, PatientKey]:
        """The current data keys of the patients that still have one (none after a shred).

        A reader must see a shred made by another process at once, so the cache serves
        only keys read from the table while the ledger's shred count was what it is now
        (one one-row read); the others are read from the table. A page naming a hundred
        known patients then costs one small query rather than a hundred unwrappings."""
        wanted = list(dict.fromkeys(refs))
        return self._read(ledger, wanted)[1] if wanted else {}

    def _read(self, ledger: str, wanted: list[str]) -> tuple[int, dict[str, PatientKey]]:
        """The ledger's shred count, then the keys of ``wanted`` that are in the table
        (from the cache where read at that count)."""
        # Reads only, each statement seeing what is committed: no transaction of its own
        # (which cost two more round trips on every page of an access history).
        with self.store.reading() as tx:
            if self.store.dialect != "postgresql":
                # The count first: a shred after this read shows at settling as a newer
                # count, never as an older one beside a key that is already gone.
                epoch = self._epoch(tx, ledger)
                keys, rest = self._cached(ledger, wanted, epoch)
                loaded = self._load(tx, ledger, rest) if rest else {}
            else:
                # The same, in one round trip rather than two: the keys not cached at all
                # (read whatever the count) go in one pipeline behind the count, which
                # the server runs first. Keys cached at another count, if any, take a
                # second trip once the count is known.
                with self.store.pipeline(tx):
                    counted = self.store.cursor_beside(tx)
                    self._send_epoch(counted, ledger)
                    guessed = self._cached(ledger, wanted)[1]
                    probed = self.store.cursor_beside(tx)
                    if guessed:
                        send_probe_each(probed, "SELECT patient_ref, key_id, kek_id, wrapped"
                                        " FROM patient_keys WHERE ledger = %s",
                                        "patient_ref", guessed, (ledger,))
                    epoch = self._epoch_of(counted)
                    keys, rest = self._cached(ledger, wanted, epoch)
                    wanting = set(rest)
                    loaded = {} if not guessed else {
                        ref: self._unwrap(ledger, ref, key_id, kek_id, wrapped)
                        for ref, key_id, kek_id, wrapped in probed.fetchall()
                        if ref in wanting}
                    asked = set(guessed)
                    later = [ref for ref in rest if ref not in asked]
                    if later:
                        loaded.update(self._load(tx, ledger, later))
            if loaded:
                self._remember(ledger, loaded, epoch)
                keys.update(loaded)
        return epoch, keys

    def read_at(self, ledger: str, used: dict[str, str]) -> dict[str, int]:
        """For each patient of ``used`` (ref -> key_id), the ledger's shred count when
        that key was read from the table (-1: not known to be stored). Taken before the
        write lock, so that :meth:`settle` has only a comparison left to do under it."""
        cache = self._cache
        with self._lock:
            return {
                ref: hit[2] if (hit := cache.get((ledger, ref))) is not None
                and hit[1].key_id == key_id else -1
                for ref, key_id in used.items()
            }

    def settle(
        self, tx: Any, ledger: str, used: dict[str, str], read_at: dict[str, int] | None = None
    ) -> dict[str, PatientKey]:
        """Check the keys a group was sealed with (``used``: patient ref -> key_id)
        against the table, inside the append's transaction and under the ledger's write
        lock.

        Returns the patients whose events must be sealed again, with the key to use: the
        one now in the table, or a fresh one (inserted here) when the patient was
        shredded since. Every writer of ``patient_keys`` that can remove a key --
        shredding -- holds the same lock, so nothing changes between this check and the
        commit: no retry, no race left to lose.
        """
        epoch = self._epoch(tx, ledger)
        # Only keys that may have changed are looked up: those read before the ledger's
        # latest shred. With no shred since, a group of thousands of known patients
        # costs one one-row read. (A key read at this very shred count is still stored:
        # only a shred removes one, and a shred raises the count.)
        if read_at is None:
            read_at = self.read_at(ledger, used)
        doubtful = [ref for ref, at in read_at.items() if at != epoch]
        if not doubtful:
            return {}
        held = dict(self._rows(tx, "patient_ref, key_id", ledger, doubtful))
        changed = [ref for ref in doubtful if held.get(ref) != used[ref]]
        for ref in doubtful:
            if ref not in changed:
                self._confirm(ledger, ref, used[ref], epoch)
        if not changed:
            return {}
        # Rare (a shred, or a key evicted and remade): unwrap those only.
        winners = {ref: rest for ref, *rest in self._rows(
            tx, "patient_ref, key_id, kek_id, wrapped", ledger, changed)}
        fixes: dict[str, PatientKey] = {}
        fresh = []
        for ref in changed:
            row = winners.get(ref)
            if row is not None:
                key = self._unwrap(ledger, ref, *row)
                self._remember(ledger, {ref: key}, epoch)
            else:
                key, pending = self._new_key(ledger, ref, format_recorded_at(self.clock()))
                fresh.append((ledger, ref, *pending))
                # Doubtful until a later settle sees it: this transaction may roll back.
                self._remember(ledger, {ref: key})
            fixes[ref] = key
        if fresh:
            self._insert(tx, fresh)
        return fixes

    def _confirm(self, ledger: str, ref: str, key_id: str, epoch: int) -> None:
        with self._lock:
            hit = self._cache.get((ledger, ref))
            if hit is not None and hit[1].key_id == key_id and hit[2] != epoch:
                self._cache[(ledger, ref)] = (hit[0], hit[1], epoch)

    def _epoch(self, tx: Any, ledger: str) -> int:
        """How many keys of ``ledger`` have been shredded (see migration 0006)."""
        self._send_epoch(tx, ledger)
        return self._epoch_of(tx)

    def _send_epoch(self, tx: Any, ledger: str) -> None:
        tx.execute(self.store.sql("SELECT shreds FROM key_shreds WHERE ledger = %s"), (ledger,))

    @staticmethod
    def _epoch_of(tx: Any) -> int:
        row = tx.fetchone()
        return 0 if row is None else int(row[0])

    def _new_key(
        self, ledger: str, ref: str, created_at: str
    ) -> tuple[PatientKey, tuple[str, str, bytes, str]]:
        kek_id, kek = self.ring.active_kek()
        key = PatientKey(secrets.token_hex(8), DataKey.generate())
        wrapped = wrap_key(kek, key.key, dek_aad(ledger, ref))
        return key, (key.key_id, kek_id, wrapped, created_at)

    def _insert(self, tx: Any, rows: list[Any]) -> list[str]:
        """Insert new keys; the refs that already had one (another process was first)."""
        # In one order everywhere: two processes inserting the same new patients in
        # different orders would each hold a row the other waits for (a deadlock, which
        # PostgreSQL breaks by failing one of the appends).
        rows = sorted(rows, key=lambda row: (row[0], row[1]))
        if self.store.dialect == "postgresql":
            self._send_insert(tx, rows)
            return self._lost(tx, rows)
        statement = self.store.sql(
            "INSERT INTO patient_keys (ledger, patient_ref, key_id, kek_id, wrapped,"
            " created_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
        )
        lost = []
        for row in rows:
            tx.execute(statement, row)
            if tx.rowcount != 1:
                lost.append(row[1])
        return lost

    @staticmethod
    def _send_insert(tx: Any, rows: list[Any]) -> None:
        """On PostgreSQL: one statement with (binary) array parameters rather than a
        statement per row; the refs it inserted are left on ``tx`` (see :meth:`_lost`)."""
        # In one order everywhere (see _insert).
        rows = sorted(rows, key=lambda row: (row[0], row[1]))
        tx.execute(
            "INSERT INTO patient_keys (ledger, patient_ref, key_id, kek_id, wrapped,"
            " created_at) SELECT * FROM unnest(%b::text[], %b::text[], %b::text[],"
            " %b::text[], %b::bytea[], %b::text[]) ON CONFLICT DO NOTHING"
            " RETURNING patient_ref",
            [list(column) for column in zip(*rows, strict=True)],
            prepare=True,
        )

    @staticmethod
    def _lost(tx: Any, rows: list[Any]) -> list[str]:
        """The refs of ``rows`` that :meth:`_send_insert` did not insert."""
        inserted = {row[0] for row in tx.fetchall()}
        return [row[1] for row in rows if row[1] not in inserted]

    # -- shredding and rotation ------------------------------------------------------------

    def shredder(self, ledger: str, ref: str) -> Callable[[Any], None]:
        """A step for the ledger transaction that records the shredding: it destroys the key."""

        def destroy(tx: Any) -> None:
            tx.execute(
                self.store.sql("DELETE FROM patient_keys WHERE ledger = %s AND patient_ref = %s"),
                (ledger, ref),
            )
            # Every writer that read a key of this ledger before now looks its keys up
            # again when it next settles (see settle).
            tx.execute(
                self.store.sql(
                    "INSERT INTO key_shreds (ledger, shreds) VALUES (%s, 1) ON CONFLICT (ledger)"
                    " DO UPDATE SET shreds = key_shreds.shreds + 1"
                ),
                (ledger,),
            )
            self.forget(ledger, ref)

        return destroy

    def kek_usage(self) -> dict[str, int]:
        """How many data keys each KEK wraps."""
        with self.store.transaction() as tx:
            tx.execute("SELECT kek_id, COUNT(*) FROM patient_keys GROUP BY kek_id")
            return {kek_id: int(n) for kek_id, n in tx.fetchall()}

    def rewrap_all(self, new_ring: KeyRing, progress: Callable[[int], None] | None = None) -> int:
        """Rewrap every data key not yet under ``new_ring``'s active KEK. Returns the count.

        Reads each key under its own (old) KEK from ``self.ring`` -- which must still hold
        it -- and writes it back wrapped under the new one, in batches."""
        new_kek_id, new_kek = new_ring.active_kek()
        done = 0
        while True:
            with self.store.transaction() as tx:
                tx.execute(
                    self.store.sql(
                        "SELECT ledger, patient_ref, key_id, kek_id, wrapped FROM patient_keys"
                        " WHERE kek_id <> %s LIMIT 1000"
                    ),
                    (new_kek_id,),
                )
                rows = tx.fetchall()
                if not rows:
                    return done
                for ledger, ref, key_id, kek_id, wrapped in rows:
                    key = self._unwrap(ledger, ref, key_id, kek_id, wrapped)
                    tx.execute(
                        self.store.sql(
                            "UPDATE patient_keys SET kek_id = %s, wrapped = %s"
                            " WHERE ledger = %s AND patient_ref = %s"
                        ),
                        (new_kek_id, wrap_key(new_kek, key.key, dek_aad(ledger, ref)), ledger, ref),
                    )
                done += len(rows)
            if progress is not None:
                progress(done)

    def check_all(self) -> int:
        """Unwrap every data key (before a rotation commits to a new ring): raises
        :class:`DataKeyUnusable` at the first that does not unwrap. Returns the count."""
        count, after = 0, ("", "")
        while True:
            with self.store.transaction() as tx:
                tx.execute(
                    self.store.sql(
                        "SELECT ledger, patient_ref, key_id, kek_id, wrapped FROM patient_keys"
                        " WHERE ledger > %s OR (ledger = %s AND patient_ref > %s)"
                        " ORDER BY ledger, patient_ref LIMIT 1000"
                    ),
                    (after[0], after[0], after[1]),
                )
                rows = tx.fetchall()
            if not rows:
                return count
            for ledger, ref, key_id, kek_id, wrapped in rows:
                self._unwrap(ledger, ref, key_id, kek_id, wrapped)
            count += len(rows)
            after = (rows[-1][0], rows[-1][1])

    def check_ring(self) -> None:
        """Unwrap one data key per KEK in use: a wrong or incomplete key ring fails here,
        at start, rather than at the first read."""
        with self.store.transaction() as tx:
            # One indexed probe per KEK (a correlated MIN per row was quadratic: minutes
            # at start for a few hundred thousand patients).
            tx.execute("SELECT DISTINCT kek_id FROM patient_keys")
            for (kek_id,) in tx.fetchall():
                tx.execute(
                    self.store.sql(
                        "SELECT ledger, patient_ref, key_id, kek_id, wrapped FROM patient_keys"
                        " WHERE kek_id = %s LIMIT 1"
                    ),
                    (kek_id,),
                )
                ledger, ref, key_id, kek_id, wrapped = tx.fetchone()
                self._unwrap(ledger, ref, key_id, kek_id, wrapped)
