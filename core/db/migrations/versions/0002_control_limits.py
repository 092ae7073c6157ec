"""control limits: p-chart centre lines fixed from a baseline period (manufacturing SPC phase I)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 05:09:12.428264
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('control_limits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('line', sa.String(length=200), nullable=False),
    sa.Column('p_bar', sa.Float(), nullable=False),
    sa.Column('n_baseline', sa.BigInteger(), nullable=False),
    sa.Column('baseline_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('baseline_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=100), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_control_limits'))
    )
    with op.batch_alter_table('control_limits', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_control_limits_line'), ['line'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('control_limits', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_control_limits_line'))

    op.drop_table('control_limits')
