"""tags keyed by (entity_type, entity_id, name); the prediction log indexed by model and time

A tag's identity is its entity and name (one current value each), and nothing reads a tag by a
surrogate id: the id's sequence and its second B-tree made every tag write maintain two indexes
(PostgreSQL COPY of 1M tags: 7–9 s with both, 4–5 s with the key alone). The prediction log is
read by model and time (the latest batch's scores, monitoring), never by entity, so its index
follows the reads: a batch appends under one (model, time) key, which costs next to nothing,
where the (entity_type, entity_id, model_name) entries went into the middle of the tree.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TAG_KEY = ["entity_type", "entity_id", "name"]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Dropping the column drops its primary key; the table is not rewritten.
        op.execute(
            "ALTER TABLE tags DROP CONSTRAINT uq_tags_entity_name, DROP COLUMN id, "
            "ADD CONSTRAINT pk_tags PRIMARY KEY (entity_type, entity_id, name)"
        )
    else:
        with op.batch_alter_table("tags", recreate="always") as batch_op:
            batch_op.drop_constraint("uq_tags_entity_name", type_="unique")
            batch_op.drop_column("id")
            batch_op.create_primary_key("pk_tags", TAG_KEY)
    with op.batch_alter_table("prediction_log") as batch_op:
        batch_op.drop_index("ix_prediction_log_entity")
        batch_op.create_index("ix_prediction_log_model_time", ["model_name", "predicted_at"])


def downgrade() -> None:
    with op.batch_alter_table("prediction_log") as batch_op:
        batch_op.drop_index("ix_prediction_log_model_time")
        batch_op.create_index(
            "ix_prediction_log_entity", ["entity_type", "entity_id", "model_name"]
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE tags DROP CONSTRAINT pk_tags, ADD COLUMN id BIGSERIAL PRIMARY KEY, "
            "ADD CONSTRAINT uq_tags_entity_name UNIQUE (entity_type, entity_id, name)"
        )
        return
    # SQLite numbers the rows again: an INTEGER PRIMARY KEY takes the rowid.
    with op.batch_alter_table("tags", recreate="always") as batch_op:
        batch_op.drop_constraint("pk_tags", type_="primary")
        batch_op.add_column(sa.Column("id", sa.Integer(), primary_key=True))
        batch_op.create_unique_constraint("uq_tags_entity_name", TAG_KEY)
