"""The SQLite database and its WAL/SHM are the owner's only (0600), like the key ring.

Tests run as root, who may open any file whatever its mode: so the mode bits are
checked, not whether another user could read the file. SQLite only by nature: a
PostgreSQL database's files belong to its server."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ledger.store import open_store


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_database_and_its_wal_are_created_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask, which would give 0644
    try:
        db = tmp_path / "var" / "ledger.db"
        store = open_store(f"sqlite:///{db}")
        try:
            with store.transaction() as tx:
                tx.execute("CREATE TABLE t (x INTEGER)")
                tx.execute("INSERT INTO t VALUES (1)")
            made = [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]
            assert Path(f"{db}-wal") in made
            assert {p.name: _mode(p) for p in made} == {p.name: 0o600 for p in made}
        finally:
            store.close()
    finally:
        os.umask(old)


def test_an_existing_world_readable_database_is_narrowed(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    db.touch(mode=0o644)
    os.chmod(db, 0o644)
    open_store(f"sqlite:///{db}").close()
    assert _mode(db) == 0o600
