"""tasks: an index on (entity_type, entity_id) for the 360° view's open tasks of one customer

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tasks_entity", "tasks", ["entity_type", "entity_id"])


def downgrade() -> None:
    op.drop_index("ix_tasks_entity", table_name="tasks")
