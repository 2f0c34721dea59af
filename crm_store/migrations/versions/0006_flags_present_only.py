"""flags are tags only while they hold: stored 'false' flags removed

From this version a flag (mql, churn_warning, high_activity, potential) is a tag while its
condition holds and has no row otherwise (``crm_predict.core.rules.FLAG_TAGS``). Rows earlier versions
stored as 'false' said that a flag did not hold, which is now the tag's absence: they are deleted,
without history (the flag never held). The downgrade leaves them away; an earlier version writes
them again on its next run.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The flag names as this revision knows them (not imported: a migration must not change later).
FLAGS = ("mql", "churn_warning", "high_activity", "potential")


def upgrade() -> None:
    op.execute(
        sa.text("DELETE FROM tags WHERE value = 'false' AND name IN :flags").bindparams(
            sa.bindparam("flags", value=list(FLAGS), expanding=True)
        )
    )


def downgrade() -> None:
    pass
