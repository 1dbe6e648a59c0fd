"""Dead letters: standard-format messages (ATNA syslog) that could not be mapped to an
event, kept as received (sealed under the key ring when PHI is encrypted at rest) with
the reason, until a replay after a fix turns them into ledger entries.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    key, text, blob, bigint = (
        ("bigserial PRIMARY KEY", "text", "bytea", "bigint") if postgres
        else ("INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT", "BLOB", "INTEGER"))
    op.execute(f"""CREATE TABLE dead_letters (
        id {key},
        ledger {text} NOT NULL,
        received_at {text} NOT NULL,
        format {text} NOT NULL,
        sender {text} NOT NULL,
        sha256 {text} NOT NULL,
        reason {text} NOT NULL,
        kek_id {text},
        wrapped_key {blob},
        message {blob} NOT NULL,
        replayed_seq {bigint},
        replayed_at {text}
    )""")
    # A message received again while its letter is open finds that letter.
    op.execute("CREATE INDEX dead_letters_message ON dead_letters (ledger, sha256)")


def downgrade() -> None:
    op.execute("DROP TABLE dead_letters")
