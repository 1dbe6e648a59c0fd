"""The ledger core: the eventsourcing library's events table, event ids, ledger names,
and the triggers that make all three append-only.

The events table and its composite type are exactly what the library's recorders expect
(they run with CREATE_TABLE off: alembic owns the DDL).

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = ("stored_events", "ledger_event_ids", "ledgers")

POSTGRES = [
    """
    CREATE TYPE stored_event_uuid AS (
        originator_id uuid, originator_version bigint, topic text, state bytea)
    """,
    """
    CREATE TABLE stored_events (
        originator_id uuid NOT NULL,
        originator_version bigint NOT NULL,
        topic text,
        state bytea,
        notification_id bigserial,
        PRIMARY KEY (originator_id, originator_version))
    WITH (autovacuum_enabled = true,
          autovacuum_vacuum_threshold = 100000000,
          autovacuum_vacuum_scale_factor = 0.5,
          autovacuum_analyze_threshold = 1000,
          autovacuum_analyze_scale_factor = 0.01)
    """,
    "CREATE UNIQUE INDEX stored_events_notification_id_idx"
    " ON stored_events (notification_id ASC)",
    """
    CREATE TABLE ledger_event_ids (
        ledger_id uuid NOT NULL,
        event_id uuid NOT NULL,
        seq bigint NOT NULL,
        fingerprint text NOT NULL,
        PRIMARY KEY (ledger_id, event_id))
    """,
    """
    CREATE TABLE ledgers (
        name text PRIMARY KEY,
        ledger_id uuid NOT NULL UNIQUE,
        created_at text NOT NULL)
    """,
    """
    CREATE FUNCTION phi_ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'phi-ledger: % on % refused: the ledger is append-only',
            TG_OP, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
]
for _table in APPEND_ONLY:
    POSTGRES += [
        f"CREATE TRIGGER {_table}_append_only BEFORE UPDATE OR DELETE ON {_table}"
        " FOR EACH ROW EXECUTE FUNCTION phi_ledger_refuse_change()",
        f"CREATE TRIGGER {_table}_no_truncate BEFORE TRUNCATE ON {_table}"
        " FOR EACH STATEMENT EXECUTE FUNCTION phi_ledger_refuse_change()",
    ]

SQLITE = [
    """
    CREATE TABLE stored_events (
        originator_id TEXT,
        originator_version INTEGER,
        topic TEXT,
        state BLOB,
        PRIMARY KEY (originator_id, originator_version))
    """,
    """
    CREATE TABLE ledger_event_ids (
        ledger_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        fingerprint TEXT NOT NULL,
        PRIMARY KEY (ledger_id, event_id)) WITHOUT ROWID
    """,
    """
    CREATE TABLE ledgers (
        name TEXT PRIMARY KEY,
        ledger_id TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL)
    """,
]
for _table in APPEND_ONLY:
    for _op in ("UPDATE", "DELETE"):
        SQLITE.append(
            f"CREATE TRIGGER {_table}_no_{_op.lower()} BEFORE {_op} ON {_table} BEGIN"
            f" SELECT RAISE(ABORT, 'phi-ledger: {_op} on {_table} refused: the ledger is"
            " append-only'); END"
        )


def upgrade() -> None:
    statements = POSTGRES if op.get_bind().dialect.name == "postgresql" else SQLITE
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    raise RuntimeError("the ledger is append-only: its tables are never dropped by migration")
