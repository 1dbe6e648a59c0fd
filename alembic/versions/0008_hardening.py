"""Reserved for issue 17 (quarantine, submitted_by, approvals); no schema change yet.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
