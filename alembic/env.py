"""Alembic environment: migrations run online, with one migrator at a time.

Several server processes may start together and each migrates on start; a PostgreSQL
advisory lock (or, on SQLite, the database's own write lock) makes them take turns, and
the ones that come second find nothing left to do.
"""

from __future__ import annotations

from sqlalchemy import create_engine, pool, text

from alembic import context

MIGRATION_LOCK_KEY = 0x5048494D49475254  # "PHIMIGRT"


def sqlalchemy_url(url: str) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.removeprefix("postgres://")
    return url


def run_migrations_online() -> None:
    url = context.config.attributes.get("database_url") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise RuntimeError("no database URL given to alembic")
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            connection.commit()
        elif connection.dialect.name == "sqlite":
            connection.exec_driver_sql("PRAGMA busy_timeout = 60000")
            connection.commit()  # end the autobegun transaction: alembic must own its own
        try:
            context.configure(connection=connection, transactional_ddl=True)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY}
                )
                connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("phi-ledger migrations run online only: use `phi-ledger migrate`")
run_migrations_online()
