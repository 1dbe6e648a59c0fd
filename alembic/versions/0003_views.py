"""The read side: view tables and the projections' tracking table.

Views are derived data: ``phi-ledger rebuild`` empties and refills them from the ledger,
so unlike the ledger they are not append-only. They hold PHI only as the ledger does --
tokens sealed under the patient's data key, copied from the stored events unopened -- and
find patients by blind index (``patient_ref``), so a dump of them reveals no PHI either.

``notification_tracking`` is the eventsourcing library's single-row tracking table (one
row per view: the last notification id it has applied), with the ``__migration__`` row
the library's tracking recorder expects when it does not create the table itself.

Times are stored twice: as posted (``occurred_at``, with its offset) and normalised to
UTC (``occurred_utc``, fixed width, so text order is time order on both databases).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _tables(text: str, bigint: str, boolean: str) -> list[str]:
    return [
        f"""
        CREATE TABLE notification_tracking (
            application_name {text} PRIMARY KEY,
            notification_id {bigint})
        """,
        "INSERT INTO notification_tracking VALUES ('__migration__', 1)",
        f"""
        CREATE TABLE view_patients (
            ledger {text} NOT NULL,
            patient_ref {text} NOT NULL,
            patient_token {text} NOT NULL,
            key_id {text},
            record {text} NOT NULL,
            deleted {boolean} NOT NULL,
            shredded {boolean} NOT NULL,
            created_seq {bigint} NOT NULL,
            updated_seq {bigint} NOT NULL,
            updated_utc {text} NOT NULL,
            PRIMARY KEY (ledger, patient_ref))
        """,
        f"""
        CREATE TABLE view_accesses (
            ledger {text} NOT NULL,
            seq {bigint} NOT NULL,
            event_id {text} NOT NULL,
            occurred_at {text} NOT NULL,
            occurred_utc {text} NOT NULL,
            recorded_at {text} NOT NULL,
            action {text} NOT NULL,
            outcome {text} NOT NULL,
            purpose {text},
            channel {text},
            actor_id {text} NOT NULL,
            actor_kind {text} NOT NULL,
            actor_role {text},
            actor_organization {text},
            actor_mfa {boolean},
            device_id {text},
            ip {text},
            session_id {text},
            patient_ref {text},
            patient_token {text},
            key_id {text},
            resource_type {text},
            resource_id {text},
            resource_phi {text},
            source_system {text},
            source_site {text},
            PRIMARY KEY (ledger, seq))
        """,
        "CREATE INDEX view_accesses_patient_idx"
        " ON view_accesses (ledger, patient_ref, occurred_utc, seq)",
        "CREATE INDEX view_accesses_actor_idx"
        " ON view_accesses (ledger, actor_id, occurred_utc, seq)",
        f"""
        CREATE TABLE view_disclosures (
            ledger {text} NOT NULL,
            seq {bigint} NOT NULL,
            event_id {text} NOT NULL,
            occurred_at {text} NOT NULL,
            occurred_utc {text} NOT NULL,
            outcome {text} NOT NULL,
            patient_ref {text} NOT NULL,
            key_id {text},
            recipient_name {text} NOT NULL,
            recipient_address {text},
            recipient_kind {text} NOT NULL,
            description {text} NOT NULL,
            purpose {text},
            channel {text},
            actor_id {text} NOT NULL,
            authorization_id {text},
            exempt {text},
            PRIMARY KEY (ledger, seq))
        """,
        "CREATE INDEX view_disclosures_patient_idx"
        " ON view_disclosures (ledger, patient_ref, occurred_utc, seq)",
        f"""
        CREATE TABLE view_workforce (
            ledger {text} NOT NULL,
            staff_id {text} NOT NULL,
            role {text},
            site {text},
            active {boolean} NOT NULL,
            added_utc {text},
            removed_utc {text},
            removal_reason {text},
            training_utc {text},
            training_course {text},
            mfa_enrolled_utc {text},
            mfa_method {text},
            updated_seq {bigint} NOT NULL,
            PRIMARY KEY (ledger, staff_id))
        """,
        f"""
        CREATE TABLE view_partners (
            ledger {text} NOT NULL,
            partner {text} NOT NULL,
            service {text},
            agreement_id {text},
            baa_active {boolean} NOT NULL,
            signed_utc {text},
            ended_utc {text},
            updated_seq {bigint} NOT NULL,
            PRIMARY KEY (ledger, partner))
        """,
    ]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        statements = _tables("text", "bigint", "boolean")
    else:
        statements = _tables("TEXT", "INTEGER", "INTEGER")
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    for table in (
        "view_partners", "view_workforce", "view_disclosures", "view_accesses",
        "view_patients", "notification_tracking",
    ):
        op.execute(f"DROP TABLE {table}")
