"""Continual monitoring: the alerts view and the state its rules read.

``view_alerts``: one row per rule and entry that raised it, with its status (open,
explained, acknowledged, dismissed). The patient appears only as the stored blind index
and sealed id token, like the other views. ``monitor_state``: what the rules need to know
of the ledger before an entry, one small JSON value per key (keyed digests of names and
dates of birth, blind indexes, counts, times): no PHI in the clear. Both are views, so
``phi-ledger rebuild alerts`` empties and refills them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _statements(text: str, bigint: str) -> list[str]:
    return [
        f"""
        CREATE TABLE view_alerts (
            ledger {text} NOT NULL,
            alert_id {text} NOT NULL,
            seq {bigint} NOT NULL,
            rule {text} NOT NULL,
            severity {text} NOT NULL,
            status {text} NOT NULL,
            event_id {text} NOT NULL,
            occurred_at {text} NOT NULL,
            occurred_utc {text} NOT NULL,
            actor_id {text} NOT NULL,
            patient_ref {text},
            patient_token {text},
            key_id {text},
            explained_by {bigint},
            details {text} NOT NULL,
            triaged_seq {bigint},
            PRIMARY KEY (ledger, alert_id))
        """,
        "CREATE INDEX view_alerts_seq_idx ON view_alerts (ledger, seq)",
        "CREATE INDEX view_alerts_actor_idx ON view_alerts (ledger, actor_id, seq)",
        "CREATE INDEX view_alerts_patient_idx ON view_alerts (ledger, patient_ref, seq)",
        f"""
        CREATE TABLE monitor_state (
            ledger {text} NOT NULL,
            key {text} NOT NULL,
            value {text} NOT NULL,
            PRIMARY KEY (ledger, key))
        """,
    ]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        statements = _statements("text", "bigint")
    else:
        statements = _statements("TEXT", "INTEGER")
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    for table in ("monitor_state", "view_alerts"):
        op.execute(f"DROP TABLE {table}")
