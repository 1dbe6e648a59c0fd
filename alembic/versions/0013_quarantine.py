"""Entries a view could not apply, set aside so that the view goes on.

A row per (view, entry): the entry's notification id (its place in the store's commit
order), its ledger and seq when they could be read, the error's type and a short fixed
reason (never the exception's message: it can quote the entry), and when it was set
aside. No PHI: the entry itself stays where it is, in the ledger.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    text, bigint = ("text", "bigint") if postgres else ("TEXT", "INTEGER")
    op.execute(
        f"CREATE TABLE projection_quarantine (view {text} NOT NULL,"
        f" notification_id {bigint} NOT NULL, ledger {text}, seq {bigint},"
        f" error {text} NOT NULL, quarantined_at {text} NOT NULL,"
        " PRIMARY KEY (view, notification_id))")


def downgrade() -> None:
    op.execute("DROP TABLE projection_quarantine")
