"""Bringing a database to the newest schema (alembic owns every table)."""

from __future__ import annotations

import fcntl
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

from alembic import command

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"


def alembic_config(database_url: str) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.attributes["database_url"] = database_url
    return config


def _sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def migrate(database_url: str) -> str:
    """Upgrade to the newest revision; safe to call from many processes at once."""
    config = alembic_config(database_url)
    if database_url.startswith("sqlite:///"):
        db = Path(database_url.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
        # pysqlite reads alembic_version outside the write lock; a file lock keeps two
        # starting processes from both deciding to create the tables.
        with open(db.with_name(db.name + ".migrate.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            command.upgrade(config, "head")
    else:
        command.upgrade(config, "head")
    return newest_revision()


def newest_revision() -> str:
    head = ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_current_head()
    assert head is not None
    return head


class SchemaNotCurrent(Exception):
    """The database is not at the newest schema (or holds no ledger at all)."""


def require_current(database_url: str) -> None:
    """Check, without writing anything, that the schema is the newest: readers such as
    ``verify`` and ``export`` must not change the database they examine."""
    if database_url.startswith("sqlite:///"):
        path = Path(database_url.removeprefix("sqlite:///"))
        if not path.exists():
            raise SchemaNotCurrent(f"no ledger database at {path}")
    found = current_revision(database_url)
    if found != newest_revision():
        raise SchemaNotCurrent(
            f"the database is at schema revision {found}, not {newest_revision()}:"
            " run `phi-ledger migrate`"
        )


def current_revision(database_url: str) -> str | None:
    engine = create_engine(_sqlalchemy_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
