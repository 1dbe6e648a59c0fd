"""The store contract (tests/store_contract.py) run against each backend."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.store_contract import LedgerStoreContract
from tests.support import free_port, fresh_postgres


class TestSQLiteStore(LedgerStoreContract):
    listen_timeout = 0.05  # no notifications: a listener sleeps this long, then says True

    @contextmanager
    def database(self, tmp_path: Path) -> Iterator[str]:
        yield f"sqlite:///{tmp_path}/ledger.db"

    def unreachable_url(self, tmp_path: Path) -> str:
        # A file that is not an SQLite database: every statement fails on it.
        path = tmp_path / "not-a-database.db"
        path.write_bytes(b"this is not an SQLite database file\n" * 64)
        return f"sqlite:///{path}"


class TestPostgresStore(LedgerStoreContract):
    @contextmanager
    def database(self, tmp_path: Path) -> Iterator[str]:
        with fresh_postgres() as url:
            yield url

    def unreachable_url(self, tmp_path: Path) -> str:
        # A port nothing listens on (free_port binds and releases one).
        return f"postgresql://postgres@127.0.0.1:{free_port()}/test"
