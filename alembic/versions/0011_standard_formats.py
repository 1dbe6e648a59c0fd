"""Reserved for issue 20 (FHIR AuditEvent, ATNA dead letters); no schema change yet.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
