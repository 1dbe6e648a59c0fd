"""One open dead letter a message *of each sender*: the same bytes from two senders are
two messages (each becomes an entry of its own when it maps), so two letters. The first
form of revision 0016 made the open letters unique on (ledger, sha256) alone: a second
sender's letter was then taken for the first's, and lost once that one was replayed.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX dead_letters_open")
    op.execute("CREATE UNIQUE INDEX dead_letters_open ON dead_letters (ledger, sender,"
               " sha256) WHERE replayed_seq IS NULL")


def downgrade() -> None:
    # Open letters of the same bytes from two senders are two messages received, each
    # kept only here: refused rather than deleted (replay them first).
    shared = op.get_bind().exec_driver_sql(
        "SELECT COUNT(*) FROM (SELECT ledger, sha256 FROM dead_letters WHERE replayed_seq"
        " IS NULL GROUP BY ledger, sha256 HAVING COUNT(*) > 1) AS shared").scalar()
    if shared:
        raise RuntimeError(f"{shared} messages are open dead letters of more than one "
                           "sender: replay them (phi-ledger dead-letters replay) before "
                           "downgrading below revision 0017")
    op.execute("DROP INDEX dead_letters_open")
    op.execute("CREATE UNIQUE INDEX dead_letters_open ON dead_letters (ledger, sha256)"
               " WHERE replayed_seq IS NULL")
