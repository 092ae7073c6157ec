"""monitoring: runs (drift, quality, performance per job or day) and alerts

Revision ID: 0006_monitoring
Revises: 0005_users (the users and the append-only audit log)
Create Date: 2026-12-07 02:25:51

Self-contained: it only creates its two tables, so it can be re-chained after another 0005.
"""
import sqlalchemy as sa
from alembic import op

revision = '0006_monitoring'
down_revision = '0005_users'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('monitoring_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_name', sa.String(length=200), nullable=False),
    sa.Column('model_version', sa.Integer(), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('scope', sa.String(length=20), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('day', sa.String(length=10), nullable=True),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('max_psi', sa.Float(), nullable=False),
    sa.Column('score_psi', sa.Float(), nullable=True),
    sa.Column('n_drifted', sa.Integer(), nullable=False),
    sa.Column('columns', sa.JSON(), nullable=False),
    sa.Column('score', sa.JSON(), nullable=False),
    sa.Column('performance', sa.JSON(), nullable=False),
    sa.Column('thresholds', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_monitoring_runs_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_monitoring_runs_model_version_id_model_versions'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_monitoring_runs'))
    )
    with op.batch_alter_table('monitoring_runs', schema=None) as batch_op:
        batch_op.create_index('ix_monitoring_runs_model', ['model_name', 'created_at'], unique=False)

    op.create_table('monitoring_alerts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('model_name', sa.String(length=200), nullable=False),
    sa.Column('model_version', sa.Integer(), nullable=False),
    sa.Column('rule', sa.String(length=50), nullable=False),
    sa.Column('severity', sa.String(length=10), nullable=False),
    sa.Column('feature', sa.String(length=200), nullable=True),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('threshold', sa.Float(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('acknowledged_by', sa.String(length=100), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['monitoring_runs.id'], name=op.f('fk_monitoring_alerts_run_id_monitoring_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_monitoring_alerts'))
    )
    with op.batch_alter_table('monitoring_alerts', schema=None) as batch_op:
        batch_op.create_index('ix_monitoring_alerts_model', ['model_name', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_monitoring_alerts_run_id'), ['run_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('monitoring_alerts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_monitoring_alerts_run_id'))
        batch_op.drop_index('ix_monitoring_alerts_model')

    op.drop_table('monitoring_alerts')
    with op.batch_alter_table('monitoring_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_monitoring_runs_model')

    op.drop_table('monitoring_runs')
