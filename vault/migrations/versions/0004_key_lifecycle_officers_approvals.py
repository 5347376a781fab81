"""key lifecycle, officers, approvals, audit checkpoints

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 07:06:41.326429
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "approval_requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("required", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.String(length=1000), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_requests")),
    )
    with op.batch_alter_table("approval_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_approval_requests_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_approval_requests_subject"), ["subject"], unique=False)

    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("at", sa.String(length=40), nullable=False),
        sa.Column("kid", sa.String(length=128), nullable=False),
        sa.Column("token", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_checkpoints")),
    )
    op.create_table(
        "key_ceremonies",
        sa.Column("kid", sa.String(length=128), nullable=False),
        sa.Column("token", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["kid"], ["keys.kid"], name=op.f("fk_key_ceremonies_kid_keys")),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_key_ceremonies")),
    )
    op.create_table(
        "officers",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("client_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"], ["api_clients.client_id"], name=op.f("fk_officers_client_id_api_clients")
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_officers")),
        sa.UniqueConstraint("client_id", name=op.f("uq_officers_client_id")),
    )
    op.create_table(
        "approval_votes",
        sa.Column("request_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("officer", sa.String(length=64), nullable=False),
        sa.Column("decision", sa.String(length=8), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("comment", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["officer"], ["officers.name"], name=op.f("fk_approval_votes_officer_officers")
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["approval_requests.id"],
            name=op.f("fk_approval_votes_request_id_approval_requests"),
        ),
        sa.PrimaryKeyConstraint("request_id", "officer", name=op.f("pk_approval_votes")),
    )
    with op.batch_alter_table("keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sign_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("max_signatures", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("signature_count", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("compromised_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("state_reason", sa.String(length=500), nullable=True))

    with op.batch_alter_table("licences", schema=None) as batch_op:
        batch_op.add_column(sa.Column("superseded_by", sa.String(length=128), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("licences", schema=None) as batch_op:
        batch_op.drop_column("superseded_by")

    with op.batch_alter_table("keys", schema=None) as batch_op:
        batch_op.drop_column("state_reason")
        batch_op.drop_column("compromised_at")
        batch_op.drop_column("destroyed_at")
        batch_op.drop_column("signature_count")
        batch_op.drop_column("max_signatures")
        batch_op.drop_column("sign_until")

    op.drop_table("approval_votes")
    op.drop_table("officers")
    op.drop_table("key_ceremonies")
    op.drop_table("audit_checkpoints")
    with op.batch_alter_table("approval_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_approval_requests_subject"))
        batch_op.drop_index(batch_op.f("ix_approval_requests_state"))

    op.drop_table("approval_requests")
