"""messages: what customers wrote or were sent, linked to the entities it concerns

One row per message (email, chat, WeChat, call note, ticket body) with its direction, time,
language and text, linked to a contact, account, lead, deal and/or ticket. ``intent`` and
``sentiment`` hold a source's own labels when it has them (the demo's ground truth); what the
message model reads is written as tags. The source CRM's id is ``external_id``, as in 0007.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# The links as this revision knows them (not imported: a migration must not change later),
# with whether the messages are read by it.
LINKS = {"contact": True, "account": False, "lead": False, "deal": True, "ticket": True}


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", ID, nullable=False),
        sa.Column("external_id", sa.String(100), nullable=True),
        *(sa.Column(f"{link}_id", ID, nullable=True) for link in LINKS),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("direction", sa.String(10), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=False),
        sa.Column("language", sa.String(10), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("intent", sa.String(50), nullable=True),
        sa.Column("sentiment", sa.String(20), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        *(sa.ForeignKeyConstraint([f"{link}_id"], [f"{link}s.id"]) for link in LINKS),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("uq_messages_external_id", "messages", ["external_id"], unique=True)
    op.create_index("ix_messages_sent_at", "messages", ["sent_at"])
    for link, read in LINKS.items():
        if read:
            op.create_index(f"ix_messages_{link}_id", "messages", [f"{link}_id"])


def downgrade() -> None:
    op.drop_table("messages")  # its indexes go with it
