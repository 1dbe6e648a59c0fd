"""The syslog inbox: each ATNA message as received, durable before the listener reads the
connection's next frame, until it is settled as a ledger entry or a dead letter (sealed
under the key ring when PHI is encrypted at rest, as the dead letters are); and at most
one open dead letter a message.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    key, text, blob = (("bigserial PRIMARY KEY", "text", "bytea") if postgres
                       else ("INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT", "BLOB"))
    op.execute(f"""CREATE TABLE syslog_inbox (
        id {key},
        ledger {text} NOT NULL,
        sender {text} NOT NULL,
        received_at {text} NOT NULL,
        kek_id {text},
        wrapped_key {blob},
        message {blob} NOT NULL
    )""")
    # One open dead letter a message of a sender: settlers of two processes may bury it
    # at once. Listeners before this revision could, rarely, each add the same message
    # (the same sender, the same bytes: its digest); the first letter stays. (Revision
    # 0017 makes the index of databases that ran this one before it named the sender.)
    op.execute("DELETE FROM dead_letters WHERE replayed_seq IS NULL AND id NOT IN"
               " (SELECT MIN(id) FROM dead_letters WHERE replayed_seq IS NULL"
               " GROUP BY ledger, sender, sha256)")
    op.execute("CREATE UNIQUE INDEX dead_letters_open ON dead_letters (ledger, sender,"
               " sha256) WHERE replayed_seq IS NULL")


def downgrade() -> None:
    op.execute("DROP INDEX dead_letters_open")
    op.execute("DROP TABLE syslog_inbox")
