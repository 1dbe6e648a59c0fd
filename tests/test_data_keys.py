"""Per-patient data keys under concurrency: two server processes (each with its own key
cache) meeting the same new patients at the same moment end with one key per patient,
every request answered 201, and every event opens to exactly what was posted."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from api.app import build_services
from ledger.canonical import parse
from ledger.data_keys import DataKeyUnusable
from ledger.event import SYSTEM_ACTIONS
from ledger.settings import Settings
from tests.support import ServerProcess, envelope_of, make_event

LEDGER = "default"
ROUNDS, BATCH, PATIENTS = 4, 500, 1500


def _events(writer: int, start: int, n: int) -> list[dict[str, Any]]:
    """Half the events about patients every writer meets, half about its own: a race
    lost on a shared patient must not cost the keys made for the others."""
    def patient(i: int) -> str:
        if i % 2:
            return f"MRN-{(start + i) % PATIENTS:07d}"
        return f"MRN-{writer}{start + i:06d}"

    return [
        make_event(action="update", patient={"id": patient(i)},
                   data={"phone": f"555-01{i:04d}", "note": f"call {start + i}"})
        for i in range(n)
    ]


@pytest.mark.slow
def test_two_processes_meeting_the_same_new_patients(settings: Settings) -> None:
    env = {"LEDGER_DATABASE_URL": settings.database_url,
           "LEDGER_KEY_FILE": str(settings.key_file), "LEDGER_LOG_LEVEL": "warning"}
    first = ServerProcess(env).start()  # creates the key file and the schema
    second = ServerProcess(env).start()
    statuses: list[int] = []
    posted: list[dict[str, Any]] = []
    lock = threading.Lock()

    def post(server: ServerProcess, writer: int) -> None:
        with server.client(timeout=60) as http:
            for round_ in range(ROUNDS):
                batch = _events(writer, round_ * BATCH, BATCH)
                r = http.post("/v1/events/batch", json={"events": batch})
                with lock:
                    statuses.append(r.status_code)
                    if r.status_code == 201:
                        posted.extend(batch)

    threads = [threading.Thread(target=post, args=(server, k + 1))
               for k, server in enumerate([first, second, first, second])]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
    finally:
        first.stop()
        second.stop()
    assert statuses == [201] * (4 * ROUNDS)

    svc = build_services(settings)
    try:
        keys = envelope_of(svc).keys
        patients = {e["patient"]["id"] for e in posted}
        assert sum(keys.kek_usage().values()) == len(patients)
        # Beside what was posted, the service may write records of its own (the rule set
        # monitoring had in force): those are not this test's subject.
        stored = [e for e in (parse(raw)["event"] for raw in svc.store.read(LEDGER, 0, 100_000))
                  if e["action"] not in SYSTEM_ACTIONS]
        assert len(stored) == len(posted)
        revealed = {e["event_id"]: e for e in svc.protection.reveal_many(LEDGER, stored)}
        for event in posted:
            assert revealed[event["event_id"]] == event
    finally:
        svc.writer.stop()
        svc.store.close()


class _RolledBack(Exception):
    pass


def _keys_on(settings: Settings) -> tuple[Any, Any, Any]:
    """Two DataKeys on one database -- two processes' caches -- and the store."""
    from ledger.crypto.keyring import KeyRing
    from ledger.data_keys import DataKeys
    from ledger.migrate import migrate
    from ledger.store import open_store

    migrate(settings.database_url)
    store = open_store(settings.database_url)
    ring = KeyRing.generate()
    return DataKeys(store, ring), DataKeys(store, ring), store


def _held(store: Any, ref: str) -> str | None:
    with store.transaction() as tx:
        tx.execute(store.sql("SELECT key_id FROM patient_keys WHERE patient_ref = %s"), (ref,))
        row = tx.fetchone()
    return None if row is None else row[0]


def test_a_new_key_is_stored_before_anything_is_sealed_under_it(settings: Settings) -> None:
    """Keys are made outside the append (which holds the ledger's write lock); a second
    process meeting the same patient gets the stored key, not one of its own."""
    mine, other, store = _keys_on(settings)
    try:
        key = mine.current(LEDGER, ["ref-n"])["ref-n"]
        assert _held(store, "ref-n") == key.key_id
        assert other.current(LEDGER, ["ref-n"])["ref-n"].key_id == key.key_id
        with store.transaction() as tx:  # confirmed when made: settling looks nothing up
            assert mine.settle(tx, LEDGER, {"ref-n": key.key_id}) == {}
    finally:
        store.close()


def test_two_caches_making_the_same_keys_at_once_agree(settings: Settings) -> None:
    """Both insert, meeting the patients in opposite orders (no deadlock); the loser
    waits for the winner's commit and takes its keys."""
    mine, other, store = _keys_on(settings)
    refs = [f"ref-race-{i:03d}" for i in range(300)]
    got: dict[int, dict[str, Any]] = {}
    start = threading.Barrier(2)

    def make(k: int, keys: Any) -> None:
        start.wait()
        got[k] = keys.current(LEDGER, refs if k == 0 else refs[::-1])

    threads = [threading.Thread(target=make, args=(k, keys))
               for k, keys in enumerate([mine, other])]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert {r: k.key_id for r, k in got[0].items()} == {r: k.key_id for r, k in got[1].items()}
        assert all(_held(store, r) == got[0][r].key_id for r in refs)
        assert all(got[0][r].key == got[1][r].key for r in refs)
    finally:
        store.close()


def test_a_fresh_key_whose_settle_rolled_back_is_made_again(settings: Settings) -> None:
    """After a shred, settling inserts a fresh key inside the append's transaction; if
    that transaction rolls back, the cached fresh key must not be trusted as stored."""
    mine, other, store = _keys_on(settings)
    try:
        first = mine.current(LEDGER, ["ref-a"])["ref-a"]
        with store.transaction() as tx:
            other.shredder(LEDGER, "ref-a")(tx)
        with pytest.raises(_RolledBack), store.transaction() as tx:
            fresh = mine.settle(tx, LEDGER, {"ref-a": first.key_id})["ref-a"]
            raise _RolledBack
        assert _held(store, "ref-a") is None
        again = mine.current(LEDGER, ["ref-a"])["ref-a"]
        assert again.key_id == fresh.key_id  # the cache still offers the lost key...
        with store.transaction() as tx:
            fixes = mine.settle(tx, LEDGER, {"ref-a": again.key_id})
        # ...and settling notices it is not in the table and seals under a stored one.
        assert set(fixes) == {"ref-a"}
        assert _held(store, "ref-a") == fixes["ref-a"].key_id
    finally:
        store.close()


def test_a_shred_elsewhere_makes_every_cached_key_of_the_ledger_doubtful(
    settings: Settings,
) -> None:
    """Settling trusts a cached key only while its ledger's shred count is unchanged; a
    shred by another process (another cache) forces a look-up, which finds the key gone."""
    mine, other, store = _keys_on(settings)
    try:
        key = mine.current(LEDGER, ["ref-b"])["ref-b"]
        with store.transaction() as tx:
            mine.settle(tx, LEDGER, {"ref-b": key.key_id})
        with store.transaction() as tx:  # a second settle confirms it at the current count
            assert mine.settle(tx, LEDGER, {"ref-b": key.key_id}) == {}
        with store.transaction() as tx:
            other.shredder(LEDGER, "ref-b")(tx)
        assert _held(store, "ref-b") is None
        with store.transaction() as tx:
            fixes = mine.settle(tx, LEDGER, {"ref-b": key.key_id})
        assert set(fixes) == {"ref-b"} and fixes["ref-b"].key_id != key.key_id
        assert _held(store, "ref-b") == fixes["ref-b"].key_id
    finally:
        store.close()


def test_a_patient_id_is_sealed_once_per_data_key(settings: Settings) -> None:
    """Ingest reuses a patient's id token while the key is unchanged (it would show only
    what patient.ref shows); a shred gives a new key and so a new token; every stored
    event reveals exactly as posted."""
    from ledger.protection import EnvelopeProtection

    keys, other, store = _keys_on(settings)
    protection = EnvelopeProtection(keys.ring, keys)
    try:
        posted = [make_event(patient={"id": "MRN-4242"}, data={"note": f"n{i}"}) for i in range(3)]
        first = protection.protect_many(LEDGER, posted[:2])
        assert first[0]["patient"]["id"] == first[1]["patient"]["id"]
        assert first[0]["data"]["note"] != first[1]["data"]["note"]
        assert protection.reveal_many(LEDGER, first) == posted[:2]
        ref = first[0]["patient"]["ref"]
        with store.transaction() as tx:
            other.shredder(LEDGER, ref)(tx)
        later = protection.protect_many(LEDGER, posted[2:])
        with store.transaction() as tx:
            fixes = protection.settler(LEDGER, posted[2:], later)(tx)
        resealed = fixes[0]
        assert resealed["patient"]["key"] != first[0]["patient"]["key"]
        assert resealed["patient"]["id"] != first[0]["patient"]["id"]
        assert protection.reveal_many(LEDGER, [resealed]) == posted[2:]
    finally:
        store.close()


def test_a_shred_between_preparing_and_settling_is_caught_under_the_lock(
    settings: Settings,
) -> None:
    """The settlement is prepared before the write lock (which keys, read when); a shred
    made after that, before the lock, must still be seen by the step run under it."""
    from ledger.protection import EnvelopeProtection

    keys, other, store = _keys_on(settings)
    protection = EnvelopeProtection(keys.ring, keys)
    try:
        posted = [make_event(patient={"id": "MRN-5151"}, data={"note": "n"})]
        stored = protection.protect_many(LEDGER, posted)
        with store.transaction() as tx:  # nothing happened since the key was made
            assert protection.settler(LEDGER, posted, stored)(tx) == {}
        step = protection.settler(LEDGER, posted, stored)
        with store.transaction() as tx:
            other.shredder(LEDGER, stored[0]["patient"]["ref"])(tx)
        with store.transaction() as tx:
            fixes = step(tx)
        assert list(fixes) == [0]
        assert fixes[0]["patient"]["key"] != stored[0]["patient"]["key"]
        assert fixes[0]["patient"]["key"] == _held(store, stored[0]["patient"]["ref"])
        assert protection.reveal_many(LEDGER, [fixes[0]]) == posted
    finally:
        store.close()


def test_a_staff_members_key_is_settled_under_the_lock_like_a_patients(
    settings: Settings,
) -> None:
    """A workforce event's personal data is sealed under its subject's key, which the
    settlement checks as it does a patient's: a shred of that key before the lock has
    the event sealed again, under the new key, beside a patient event left alone."""
    from ledger.protection import EnvelopeProtection

    keys, other, store = _keys_on(settings)
    protection = EnvelopeProtection(keys.ring, keys)
    try:
        staff = make_event(action="staff_added", data={"staff_id": "u-7", "role": "nurse",
                                                       "name": "Ana M. Reyes"})
        staff.pop("patient", None)
        posted = [make_event(patient={"id": "MRN-6161"}, data={"note": "n"}), staff]
        stored = protection.protect_many(LEDGER, posted)
        subject = stored[1]["subject"]
        assert subject["ref"] != stored[0]["patient"]["ref"]
        assert subject["key"] == _held(store, subject["ref"])
        assert protection.reveal_many(LEDGER, stored) == posted
        step = protection.settler(LEDGER, posted, stored)
        with store.transaction() as tx:
            other.shredder(LEDGER, subject["ref"])(tx)
        with store.transaction() as tx:
            fixes = step(tx)
        assert list(fixes) == [1]
        assert fixes[1]["subject"]["ref"] == subject["ref"]
        assert fixes[1]["subject"]["key"] == _held(store, subject["ref"]) != subject["key"]
        assert protection.reveal_many(LEDGER, [fixes[1]]) == [staff]
        # the event sealed under the shredded key reads as erased, its roster fields kept
        erased = protection.reveal_many(LEDGER, [stored[1]])[0]["data"]
        assert erased == {"staff_id": "u-7", "role": "nurse", "name": "[erased]"}
    finally:
        store.close()


def test_readers_use_cached_keys_only_while_no_shred_happened(settings: Settings) -> None:
    """A reader's cached key serves while the ledger's shred count is unchanged (shown by
    damaging the stored row: the cached key still opens); a shred by another process --
    of this patient or any other of the ledger -- sends it back to the table at once."""
    mine, other, store = _keys_on(settings)
    try:
        made = other.current(LEDGER, ["ref-r", "ref-s"])
        assert mine.lookup(LEDGER, ["ref-r"])["ref-r"].key == made["ref-r"].key
        with store.transaction() as tx:
            tx.execute(store.sql("UPDATE patient_keys SET kek_id = %s WHERE patient_ref = %s"),
                       ("no-such-kek", "ref-r"))
        assert mine.lookup(LEDGER, ["ref-r"])["ref-r"].key == made["ref-r"].key
        with store.transaction() as tx:  # a shred of another patient of the ledger
            other.shredder(LEDGER, "ref-s")(tx)
        with pytest.raises(DataKeyUnusable):  # so the damaged row is read
            mine.lookup(LEDGER, ["ref-r"])
        with store.transaction() as tx:
            other.shredder(LEDGER, "ref-r")(tx)
        assert mine.lookup(LEDGER, ["ref-r", "ref-s"]) == {}
    finally:
        store.close()
