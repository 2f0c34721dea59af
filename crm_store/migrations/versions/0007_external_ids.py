"""external ids: the source CRM's own id beside the internal key; activity categories; contact aliases

Every imported entity keeps the id its source CRM gave it as text (``external_id``, unique per
entity type, NULL for rows the store made itself); the integer ``id`` stays the key every hot
path uses. Activities carry the vocabulary ``category`` their type was mapped to at import (the
features count categories, so a CRM's own activity names need no code). Contacts keep the
alternate emails and phones a merge folded into them (``;``-separated).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The entity tables as this revision knows them (not imported: a migration must not change later).
ENTITY_TABLES = (
    "users",
    "accounts",
    "contacts",
    "leads",
    "deals",
    "activities",
    "orders",
    "tickets",
)


def upgrade() -> None:
    for table in ENTITY_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("external_id", sa.String(100), nullable=True))
        # Unique, NULLs allowed (several store-made rows): both backends treat NULLs as distinct.
        op.create_index(f"uq_{table}_external_id", table, ["external_id"], unique=True)
    with op.batch_alter_table("activities") as batch:
        batch.add_column(sa.Column("category", sa.String(30), nullable=True))
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("alternate_emails", sa.Text(), nullable=True))
        batch.add_column(sa.Column("alternate_phones", sa.Text(), nullable=True))
    with op.batch_alter_table("deals") as batch:
        batch.add_column(sa.Column("pipeline", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deals") as batch:
        batch.drop_column("pipeline")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("alternate_phones")
        batch.drop_column("alternate_emails")
    with op.batch_alter_table("activities") as batch:
        batch.drop_column("category")
    for table in ENTITY_TABLES:
        op.drop_index(f"uq_{table}_external_id", table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("external_id")
