"""Per-patient data keys, wrapped under a key-encryption key.

This table is deliberately *not* append-only: crypto-shredding a patient deletes their
row, and a KEK rotation rewraps every row. The ledger itself never changes; it only
holds ciphertexts that these keys open.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

POSTGRES = [
    """
    CREATE TABLE patient_keys (
        ledger text NOT NULL,
        patient_ref text NOT NULL,
        key_id text NOT NULL,
        kek_id text NOT NULL,
        wrapped bytea NOT NULL,
        created_at text NOT NULL,
        PRIMARY KEY (ledger, patient_ref))
    """,
    "CREATE INDEX patient_keys_kek_idx ON patient_keys (kek_id)",
]
SQLITE = [
    """
    CREATE TABLE patient_keys (
        ledger TEXT NOT NULL,
        patient_ref TEXT NOT NULL,
        key_id TEXT NOT NULL,
        kek_id TEXT NOT NULL,
        wrapped BLOB NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (ledger, patient_ref)) WITHOUT ROWID
    """,
    "CREATE INDEX patient_keys_kek_idx ON patient_keys (kek_id)",
]


def upgrade() -> None:
    statements = POSTGRES if op.get_bind().dialect.name == "postgresql" else SQLITE
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE patient_keys")
