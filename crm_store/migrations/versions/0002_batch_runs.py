"""batch runs and their chunk checkpoints (serving.batch)

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "batch_runs",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("models", sa.String(length=200), nullable=False),
        sa.Column("scored_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "batch_checkpoints",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("batch_run_id", BIG_ID, nullable=False),
        sa.Column("model_name", sa.String(length=100), nullable=False),
        sa.Column("model_version", sa.String(length=50), nullable=True),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("last_entity_id", sa.BigInteger(), nullable=False),
        sa.Column("entities", sa.Integer(), nullable=False),
        sa.Column("tags_written", sa.Integer(), nullable=False),
        sa.Column("tasks_created", sa.Integer(), nullable=False),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("committed_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["batch_run_id"], ["batch_runs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "batch_run_id", "model_name", "chunk", name="uq_batch_checkpoint_chunk"
        ),
    )
    with op.batch_alter_table("batch_checkpoints", schema=None) as batch_op:
        batch_op.create_index("ix_batch_checkpoints_batch_run_id", ["batch_run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("batch_checkpoints", schema=None) as batch_op:
        batch_op.drop_index("ix_batch_checkpoints_batch_run_id")
    op.drop_table("batch_checkpoints")
    op.drop_table("batch_runs")
