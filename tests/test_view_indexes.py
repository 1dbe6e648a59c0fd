"""Deferred view indexes (projections.indexes): on PostgreSQL a rebuild loads the views'
rows with only their primary keys and builds the secondary indexes afterwards.

What must hold: after a rebuild the indexes are exactly the migrations' (names and
definitions, read from the catalogue); the views equal what incremental projection made;
a rebuild killed before its indexes were built leaves a record that the next projector
(`phi-ledger project --once`, or a follower) builds from; two projectors restoring at once
build each index once. On SQLite a rebuild touches no index."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from api.app import build_services
from api.services import Services
from ledger.settings import Settings
from projections import indexes
from projections.runner import ProjectionFailed, Projector
from tests.test_projection_faults import cli, env_for, post_workload
from tests.test_projection_model import assert_tables_equal, snapshot

VIEW_TABLES = ("view_accesses", "view_disclosures", "view_patients", "view_workforce",
               "view_partners")


def catalogue(url: str) -> dict[str, str]:
    """Every index of the view tables: name -> definition, as PostgreSQL states it."""
    with psycopg.connect(url) as conn:
        return dict(conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s)",
            (list(VIEW_TABLES),)).fetchall())


@pytest.fixture
def pg_svc(postgres_url: str, tmp_path: Path) -> Iterator[Services]:
    """PostgreSQL: deferring indexes is about PostgreSQL's catalogue itself."""
    services = build_services(Settings(database_url=postgres_url,
                                       key_file=tmp_path / "keys.json"))
    try:
        yield services
    finally:
        services.writer.stop()
        services.store.close()


def test_a_rebuild_builds_the_migrations_indexes_again_and_the_same_rows(
    pg_svc: Services,
) -> None:
    url = pg_svc.settings.database_url
    post_workload(pg_svc, 600)
    projector = Projector(pg_svc.store)
    projector.catch_up()
    migrated, before = catalogue(url), snapshot(pg_svc.store)
    secondary = {n for n, d in migrated.items() if "UNIQUE" not in d and "_pkey" not in n}
    assert {"view_accesses_patient_idx", "view_accesses_actor_idx"} <= secondary

    seen_without: set[str] = set()

    def building(name: str) -> None:  # called just before each is built again
        seen_without.update(set(migrated) - set(catalogue(url)))

    projector.rebuild(building=building)
    assert seen_without == secondary  # they really were gone while the rows went in
    assert catalogue(url) == migrated
    assert indexes.pending(pg_svc.store) == []
    assert_tables_equal(before, snapshot(pg_svc.store), "rebuild with deferred indexes")


def test_a_rebuild_killed_before_its_indexes_leaves_them_to_the_next_projector(
    pg_svc: Services,
) -> None:
    url = pg_svc.settings.database_url
    post_workload(pg_svc, 300)
    Projector(pg_svc.store).catch_up()
    migrated = catalogue(url)
    # What rebuild does in its first transaction, and then the process dies.
    with pg_svc.store.transaction() as tx:
        dropped = indexes.defer(tx, list(VIEW_TABLES))
    assert dropped and set(indexes.pending(pg_svc.store)) == set(dropped)
    assert not set(dropped) & set(catalogue(url))

    result = cli(env_for(pg_svc.settings), "project", "--once")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in dropped:
        assert f"building index {name}" in result.stdout
    assert catalogue(url) == migrated
    assert indexes.pending(pg_svc.store) == []


def test_a_follower_builds_indexes_a_killed_rebuild_left(pg_svc: Services) -> None:
    url = pg_svc.settings.database_url
    post_workload(pg_svc, 100)
    migrated = catalogue(url)
    with pg_svc.store.transaction() as tx:
        indexes.defer(tx, ["view_accesses"])
    stop = threading.Event()
    follower = threading.Thread(target=Projector(pg_svc.store).follow, args=(stop,))
    follower.start()
    try:
        for _ in range(200):
            if not indexes.pending(pg_svc.store):
                break
            stop.wait(0.05)
    finally:
        stop.set()
        follower.join(30)
    assert catalogue(url) == migrated


def test_two_projectors_restoring_at_once_build_each_index_once(pg_svc: Services) -> None:
    url = pg_svc.settings.database_url
    post_workload(pg_svc, 200)
    migrated = catalogue(url)
    with pg_svc.store.transaction() as tx:
        dropped = indexes.defer(tx, list(VIEW_TABLES))
    built: list[list[str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def restore() -> None:
        start.wait()
        try:
            built.append(indexes.restore(pg_svc.store))
        except BaseException as error:  # pragma: no cover - the failure being tested for
            errors.append(error)

    threads = [threading.Thread(target=restore) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(built[0] + built[1]) == sorted(dropped)
    assert catalogue(url) == migrated


def test_on_sqlite_a_rebuild_leaves_the_indexes_alone(tmp_path: Path) -> None:
    import sqlite3

    settings = Settings(database_url=f"sqlite:///{tmp_path}/ledger.db",
                        key_file=tmp_path / "keys.json")
    services = build_services(settings)
    try:
        post_workload(services, 200)

        def names() -> set[str]:
            with sqlite3.connect(tmp_path / "ledger.db") as conn:
                return {n for (n,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index'"
                    " AND tbl_name LIKE 'view_%'")}

        before = names()
        assert "view_accesses_patient_idx" in before
        Projector(services.store).rebuild()
        assert names() == before
        assert indexes.pending(services.store) == []
    finally:
        services.writer.stop()
        services.store.close()


# -- catch-up split over processes (a long way behind, PostgreSQL) ---------------------------


def helpers_running() -> list[str]:
    """Command lines of live projection helper processes."""
    import subprocess

    out = subprocess.run(["pgrep", "-af", "projections.runner"], capture_output=True,
                         text=True, check=False).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_a_catch_up_split_over_processes_makes_the_same_views(pg_svc: Services) -> None:
    written = post_workload(pg_svc, 3000, shred_every=4)
    migrated = catalogue(pg_svc.settings.database_url)
    # The service's own protection: the helpers must open PHI with the same key ring
    # (given in code here, so only what the projector hands them can reach them).
    protection = pg_svc.protection
    single = Projector(pg_svc.store, processes=1, protection=protection)
    single.rebuild()
    expected = snapshot(pg_svc.store)
    split = Projector(pg_svc.store, processes=2, process_backlog=1, protection=protection)
    assert split._worth_processes(written)
    seen: list[tuple[int, int]] = []
    built_after: list[str] = []
    done = split.rebuild(progress=lambda p: seen.append((p.done, p.total)),
                         building=built_after.append)
    assert done >= written
    assert_tables_equal(expected, snapshot(pg_svc.store), "catch-up split over processes")
    # Each helper built its own views' indexes once their rows were in; none was left
    # for the projector to build after every helper had finished.
    assert built_after == []
    assert catalogue(pg_svc.settings.database_url) == migrated
    assert indexes.pending(pg_svc.store) == []
    assert set(split.positions().values()) == {pg_svc.store.last_notification()}
    assert seen and seen[-1][0] == seen[-1][1]
    assert helpers_running() == []


def test_a_failing_helper_process_fails_the_catch_up(pg_svc: Services) -> None:
    post_workload(pg_svc, 300)
    projector = Projector(pg_svc.store, batch=50, processes=2, process_backlog=1)
    pg_svc.store.database_url += "_no_such_database"  # what the helpers are told to open
    with pytest.raises(ProjectionFailed, match=r"projection process of .* failed"):
        projector.catch_up()


def test_helpers_die_with_a_projector_killed_outright(pg_svc: Services) -> None:
    import signal
    import subprocess
    import sys
    import time

    post_workload(pg_svc, 10000)
    script = (
        "import sys\n"
        "from ledger.store import open_store\n"
        "from projections.runner import Projector\n"
        "store = open_store(sys.argv[1])\n"
        "Projector(store, batch=5, process_backlog=1).catch_up()\n"
    )
    from tests.support import ROOT

    parent = subprocess.Popen([sys.executable, "-c", script, pg_svc.settings.database_url],
                              cwd=ROOT)
    try:
        for _ in range(400):  # until the helpers are at work
            if len(helpers_running()) == 2:
                break
            time.sleep(0.05)
        assert len(helpers_running()) == 2
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        for _ in range(20):  # at once, not when they would have finished anyway
            if not helpers_running():
                break
            time.sleep(0.05)
        assert helpers_running() == []
    finally:
        if parent.poll() is None:
            parent.kill()
    # What they left is whole: a catch-up from there equals a rebuild.
    Projector(pg_svc.store, processes=1).catch_up()
    before = snapshot(pg_svc.store)
    Projector(pg_svc.store, processes=1).rebuild()
    assert_tables_equal(before, snapshot(pg_svc.store), "after helpers were killed")
