"""Transparency: the Merkle tree over each ledger's entries, and its signed checkpoints.

``merkle_nodes`` holds one row per perfect subtree of level 4 and up of each ledger's RFC
9162 tree (``level``, ``idx``: the subtree over leaves ``[idx * 2^level, (idx + 1) *
2^level)``, leaf index = seq - 1; see ``ledger.store.base.STORED_LEVELS_FROM``). Smaller
subtrees are hashed from the entries, whose ``hash`` is the leaf hash. Rows are written
in the append transaction of the entry that completes them and never change, so any tree
size up to the head has its proofs in the table.

``checkpoints`` holds every checkpoint the log signed: its size, root and the signed note
(C2SP checkpoint in a C2SP signed note), as served.

Both are append-only like the ledger tables (the same triggers). Existing ledgers get
their tree computed here, from their entries.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import hashlib

import sqlalchemy as sa

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

APPEND_ONLY = ("merkle_nodes", "checkpoints")
STORED_LEVELS_FROM = 4  # as ledger.store.base.STORED_LEVELS_FROM (a migration stays as written)
BACKFILL_PAGE = 10_000


def _tables(uuid: str, text: str, bigint: str, smallint: str, blob: str, suffix: str) -> list[str]:
    return [
        f"""
        CREATE TABLE merkle_nodes (
            ledger_id {uuid} NOT NULL,
            level {smallint} NOT NULL CHECK (level >= 1),
            idx {bigint} NOT NULL CHECK (idx >= 0),
            hash {blob} NOT NULL,
            PRIMARY KEY (ledger_id, level, idx)){suffix}
        """,
        f"""
        CREATE TABLE checkpoints (
            ledger_id {uuid} NOT NULL,
            size {bigint} NOT NULL CHECK (size >= 1),
            root {blob} NOT NULL,
            note {text} NOT NULL,
            signed_at {text} NOT NULL,
            PRIMARY KEY (ledger_id, size)){suffix}
        """,
    ]


def _postgres() -> list[str]:
    statements = _tables("uuid", "text", "bigint", "smallint", "bytea", "")
    for table in APPEND_ONLY:
        statements += [
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION phi_ledger_refuse_change()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION phi_ledger_refuse_change()",
        ]
    return statements


def _sqlite() -> list[str]:
    statements = _tables("TEXT", "TEXT", "INTEGER", "INTEGER", "BLOB", " WITHOUT ROWID")
    for table in APPEND_ONLY:
        for operation in ("UPDATE", "DELETE"):
            statements.append(
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table}"
                f" BEGIN SELECT RAISE(ABORT, 'phi-ledger: {operation} on {table} refused: the"
                " ledger is append-only'); END"
            )
    return statements


POSTGRES = _postgres()
SQLITE = _sqlite()


def _leaf_hash(state: bytes) -> bytes:
    # A stored entry is canonical JSON; its top-level hash is the last `,"hash":"` member.
    cut = state.rfind(b',"hash":"')
    return bytes.fromhex(state[cut + 9 : cut + 73].decode("ascii"))


def _backfill(bind: sa.Connection) -> None:
    """Every node of level >= 4 of every existing chain, computed the way appends do: a
    binary counter's carries over the leaves in seq order."""
    streams = [row[0] for row in bind.execute(sa.text(
        "SELECT DISTINCT originator_id FROM stored_events"))]
    insert = sa.text("INSERT INTO merkle_nodes (ledger_id, level, idx, hash)"
                     " VALUES (:ledger_id, :level, :idx, :hash)")
    page = sa.text(
        "SELECT originator_version, state FROM stored_events WHERE originator_id = :lid"
        " AND originator_version > :after ORDER BY originator_version LIMIT :limit")
    for lid in streams:
        levels: list[int] = []
        hashes: list[bytes] = []
        size = 0
        while True:
            rows = bind.execute(page, {"lid": lid, "after": size, "limit": BACKFILL_PAGE}).all()
            if not rows:
                break
            created = []
            for seq, state in rows:
                if seq != size + 1:
                    raise RuntimeError(f"ledger stream {lid} has a gap before seq {seq}: run"
                                       " `phi-ledger verify` on the previous version")
                digest, level, index = _leaf_hash(bytes(state)), 0, size
                while levels and levels[-1] == level:
                    levels.pop()
                    digest = hashlib.sha256(b"\x01" + hashes.pop() + digest).digest()
                    level += 1
                    index >>= 1
                    if level >= STORED_LEVELS_FROM:
                        created.append({"ledger_id": lid, "level": level, "idx": index,
                                        "hash": digest})
                levels.append(level)
                hashes.append(digest)
                size += 1
            if created:
                bind.execute(insert, created)


def upgrade() -> None:
    bind = op.get_bind()
    statements = POSTGRES if bind.dialect.name == "postgresql" else SQLITE
    for statement in statements:
        op.execute(statement)
    _backfill(bind)


def downgrade() -> None:
    raise RuntimeError("checkpoints are append-only: their tables are never dropped by migration")
