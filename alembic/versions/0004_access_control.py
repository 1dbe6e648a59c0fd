"""Access control: identities (people and applications) and their credentials.

Like ``patient_keys`` these tables are deliberately *not* append-only: a failed login
counts up, a lock expires, a key is revoked. Every such change that matters is also an
entry in the identity's ledger (logins, failures, lockouts, key creation and revocation),
appended in the same transaction, so the history lives where history is kept.

``identities`` holds one row per person or application, confined to one ledger (tenant).
``roles`` is a space-separated, sorted set. ``password_hash`` is an argon2id PHC string;
``totp_secret`` is the TOTP seed sealed (AES-256-GCM) under a key derived from the key
ring, never the seed itself; ``totp_last_step`` is the newest TOTP time step accepted, so
a code is accepted once. ``revision`` counts every change to the row: logins decide on a
snapshot and apply only if the row is still at that revision (compare and set).

``credentials`` holds API keys and login sessions (bearer tokens), each only as the
SHA-256 of the secret (256 random bits: nothing to guess, so no slow hash is needed, and
an exact digest can be looked up by index). Times are fixed-width UTC text
(``2026-11-26T19:03:22.301544Z``), so text order is time order on both databases.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _tables(text: str, bigint: str) -> list[str]:
    return [
        f"""
        CREATE TABLE identities (
            id {text} PRIMARY KEY,
            ledger {text} NOT NULL,
            kind {text} NOT NULL CHECK (kind IN ('user', 'application')),
            name {text} UNIQUE,
            roles {text} NOT NULL,
            password_hash {text},
            totp_secret {text},
            totp_last_step {bigint},
            failed_logins {bigint} NOT NULL DEFAULT 0,
            locked_until {text},
            revision {bigint} NOT NULL DEFAULT 0,
            created_at {text} NOT NULL,
            created_by {text} NOT NULL)
        """,
        "CREATE INDEX identities_ledger_idx ON identities (ledger)",
        f"""
        CREATE TABLE credentials (
            id {text} PRIMARY KEY,
            identity_id {text} NOT NULL REFERENCES identities (id),
            kind {text} NOT NULL CHECK (kind IN ('api_key', 'session')),
            secret_hash {text} NOT NULL UNIQUE,
            name {text},
            created_at {text} NOT NULL,
            expires_at {text},
            revoked_at {text})
        """,
        "CREATE INDEX credentials_identity_idx ON credentials (identity_id)",
    ]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        statements = _tables("text", "bigint")
    else:
        statements = _tables("TEXT", "INTEGER")
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE credentials")
    op.execute("DROP TABLE identities")
