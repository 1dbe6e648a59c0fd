"""Failed logins counted per (identity, client address), so that wrong passwords sent
from one address lock that address out of the account, not its owner everywhere.

A row exists while an address has failed logins (or a lock) on an identity; a successful
login from that address removes it, an admin's unlock removes all of the identity's.
The identity row's ``locked_until`` remains as what the admin listing shows: the latest
lock on any address. No PHI: an identity id, an address, a count and a time.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    text, bigint = ("text", "bigint") if postgres else ("TEXT", "INTEGER")
    op.execute(
        f"CREATE TABLE login_failures (identity_id {text} NOT NULL, address {text} NOT NULL,"
        f" failures {bigint} NOT NULL, locked_until {text},"
        " PRIMARY KEY (identity_id, address))")


def downgrade() -> None:
    op.execute("DROP TABLE login_failures")
