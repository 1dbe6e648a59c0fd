"""The staff ids a person acts as: applications post a staff id (the ``staff_id`` of
``staff_added``) as an event's ``actor.id``, and a login is an identity (``usr-...``), so
without this link nothing tells the alert desk that a reviewer is the staff member an
alert is about. A staff id belongs to at most one person of a ledger.

Also the webhook's claim on alerts (``alert_webhook_sent``): the newest alert seq whose
ids were handed to the webhook, per ledger, advanced by compare-and-set so that several
processes running the monitoring watch (``serve`` and ``phi-ledger project``) send each
alert once. No PHI: identity ids, staff ids, seqs.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    text, bigint = ("text", "bigint") if postgres else ("TEXT", "INTEGER")
    op.execute(
        f"CREATE TABLE identity_staff (identity_id {text} NOT NULL, ledger {text} NOT NULL,"
        f" staff_id {text} NOT NULL, PRIMARY KEY (identity_id, staff_id),"
        " UNIQUE (ledger, staff_id))")
    op.execute(f"CREATE TABLE alert_webhook_sent (ledger {text} PRIMARY KEY,"
               f" seq {bigint} NOT NULL)")


def downgrade() -> None:
    op.execute("DROP TABLE alert_webhook_sent")
    op.execute("DROP TABLE identity_staff")
