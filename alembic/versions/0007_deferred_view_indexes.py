"""Secondary indexes of views being rebuilt, kept here while they are dropped.

A view rebuilt from empty on PostgreSQL loads its rows with only its primary key and
builds its other indexes afterwards, in one sort each: maintaining them row by row is
most of a rebuild's cost once they outgrow memory. Each dropped index's definition is
written here in the transaction that drops it and deleted in the one that builds it
again, so a rebuild interrupted at any point leaves a record of what to restore (see
``projections.indexes``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    text = "text" if op.get_bind().dialect.name == "postgresql" else "TEXT"
    op.execute(
        f"CREATE TABLE view_deferred_indexes (index_name {text} PRIMARY KEY,"
        f" table_name {text} NOT NULL, definition {text} NOT NULL)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE view_deferred_indexes")
