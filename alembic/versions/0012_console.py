"""The last verifications of each ledger's chain, as the console's ledger page shows them.

A row per verification made through the service (``POST /v1/ledger/verify`` or the
console's "Verify now"): when, by whom, and the verdict. Hashes and seqs only: no PHI.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    text, bigint, key = ("text", "bigint", "bigserial PRIMARY KEY") if postgres else (
        "TEXT", "INTEGER", "INTEGER PRIMARY KEY AUTOINCREMENT")
    op.execute(
        f"CREATE TABLE verifications (id {key}, ledger {text} NOT NULL,"
        f" verified_at {text} NOT NULL, verified_by {text} NOT NULL, ok {bigint} NOT NULL,"
        f" verified_through {bigint} NOT NULL, first_bad_seq {bigint}, reason {text})")
    op.execute("CREATE INDEX verifications_by_ledger ON verifications (ledger, id)")


def downgrade() -> None:
    op.execute("DROP TABLE verifications")
