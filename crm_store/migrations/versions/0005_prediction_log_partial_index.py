"""the prediction log: a partial index for the CLV model's batches; on PostgreSQL a BRIN by time
and no primary-key index

The product reads the log in one place: the CLV model's latest batch (the KPI page's LTV). A
B-tree on (model_name, predicted_at) put an entry for every row a batch appends, and on
PostgreSQL that was most of the log's write cost (3.35M rows of a 1M-customer night: 15 s of the
batch). A partial index on the CLV batch rows serves that read; time-window reads (monitoring)
get a BRIN on PostgreSQL, which the log's append order makes small and nearly free to keep.
Nothing reads a log row by id either: on PostgreSQL the id keeps its sequence (unique values)
without the primary key's B-tree (COPY of 1M rows: 3.0–3.6 s with it, 1.9–2.1 s without). On
SQLite the id is the rowid, which costs nothing.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CLV_BATCH = sa.text("model_name = 'clv' AND source = 'batch'")


def upgrade() -> None:
    op.drop_index("ix_prediction_log_model_time", table_name="prediction_log")
    op.create_index(
        "ix_prediction_log_clv_batch", "prediction_log", ["predicted_at"],
        postgresql_where=CLV_BATCH, sqlite_where=CLV_BATCH,
    )  # fmt: skip
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            "ix_prediction_log_time", "prediction_log", ["predicted_at"], postgresql_using="brin"
        )
        op.drop_constraint("prediction_log_pkey", "prediction_log", type_="primary")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_primary_key("prediction_log_pkey", "prediction_log", ["id"])
        op.drop_index("ix_prediction_log_time", table_name="prediction_log")
    op.drop_index("ix_prediction_log_clv_batch", table_name="prediction_log")
    op.create_index(
        "ix_prediction_log_model_time", "prediction_log", ["model_name", "predicted_at"]
    )
