"""How many crypto-shreds each ledger has seen: the data keys' epoch.

Every shred increments its ledger's count in the transaction that deletes the key. A
writer that loaded a data key when the count was N knows, reading N again under the
write lock, that no key of that ledger has been destroyed since: it need not look each
key it sealed with up again (see ``ledger.data_keys.DataKeys.settle``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    text, bigint = ("text", "bigint") if op.get_bind().dialect.name == "postgresql" else (
        "TEXT", "INTEGER")
    op.execute(f"CREATE TABLE key_shreds (ledger {text} PRIMARY KEY, shreds {bigint} NOT NULL)")


def downgrade() -> None:
    op.execute("DROP TABLE key_shreds")
