"""Breach investigations (issue 19): the investigations view and the scope indexes.

* ``view_investigations``: one row per ``investigation_opened`` / ``_amended`` /
  ``_closed`` entry, so listing and loading an investigation reads a handful of entries
  by seq instead of scanning the ledger;
* two indexes on ``view_accesses``, by device and by IP in time order, beside the
  existing ones by patient and by actor: a scope names any of the four.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    text, bigint = ("text", "bigint") if postgres else ("TEXT", "INTEGER")
    op.execute(f"""
        CREATE TABLE view_investigations (
            ledger {text} NOT NULL,
            investigation_id {text} NOT NULL,
            seq {bigint} NOT NULL,
            action {text} NOT NULL,
            recorded_at {text} NOT NULL,
            PRIMARY KEY (ledger, investigation_id, seq))
    """)
    op.execute("CREATE INDEX view_accesses_device_idx"
               " ON view_accesses (ledger, device_id, occurred_utc, seq)")
    op.execute("CREATE INDEX view_accesses_ip_idx"
               " ON view_accesses (ledger, ip, occurred_utc, seq)")


def downgrade() -> None:
    op.execute("DROP INDEX view_accesses_ip_idx")
    op.execute("DROP INDEX view_accesses_device_idx")
    op.execute("DROP TABLE view_investigations")
