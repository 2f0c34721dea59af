"""tags pages half empty on PostgreSQL, so re-stamping every tag is a HOT update

A nightly run re-stamps each current tag (run, scored_at) and rewrites a share of the values. With
full pages every such UPDATE writes a new index entry too; with fillfactor 50 the new row version
fits on its page and the unique index is left alone (heap-only tuple), about 3x less work and WAL.
SQLite has no such setting: nothing to do there.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE tags SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE tags RESET (fillfactor)")
