"""medical: structured clinical notes with their entities, and analysed CT studies with findings

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 08:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('clinical_notes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('note_id', sa.String(length=200), nullable=False),
    sa.Column('patient_id', sa.String(length=100), nullable=True),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('text_sha256', sa.String(length=64), nullable=False),
    sa.Column('note_metadata', sa.JSON(), nullable=False),
    sa.Column('sections', sa.JSON(), nullable=False),
    sa.Column('no_known_allergies', sa.Boolean(), nullable=False),
    sa.Column('schema_version', sa.Integer(), nullable=False),
    sa.Column('structured_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clinical_notes')),
    sa.UniqueConstraint('note_id', name=op.f('uq_clinical_notes_note_id'))
    )
    with op.batch_alter_table('clinical_notes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_clinical_notes_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_clinical_notes_structured_at'), ['structured_at'], unique=False)

    op.create_table('note_entities',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('note_pk', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('normalized', sa.String(length=200), nullable=False),
    sa.Column('start', sa.Integer(), nullable=False),
    sa.Column('end', sa.Integer(), nullable=False),
    sa.Column('section', sa.String(length=50), nullable=False),
    sa.Column('negated', sa.Boolean(), nullable=False),
    sa.Column('uncertain', sa.Boolean(), nullable=False),
    sa.Column('hypothetical', sa.Boolean(), nullable=False),
    sa.Column('historical', sa.Boolean(), nullable=False),
    sa.Column('family', sa.Boolean(), nullable=False),
    sa.Column('values', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['note_pk'], ['clinical_notes.id'], name=op.f('fk_note_entities_note_pk_clinical_notes'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_note_entities'))
    )
    with op.batch_alter_table('note_entities', schema=None) as batch_op:
        batch_op.create_index('ix_note_entities_kind_normalized', ['kind', 'normalized'], unique=False)
        batch_op.create_index(batch_op.f('ix_note_entities_note_pk'), ['note_pk'], unique=False)

    op.create_table('imaging_studies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('series_uid', sa.String(length=128), nullable=False),
    sa.Column('study_uid', sa.String(length=128), nullable=False),
    sa.Column('patient_id', sa.String(length=100), nullable=True),
    sa.Column('study_date', sa.String(length=8), nullable=True),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('analyzed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'],
                            name=op.f('fk_imaging_studies_model_version_id_model_versions'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_imaging_studies')),
    sa.UniqueConstraint('series_uid', name=op.f('uq_imaging_studies_series_uid'))
    )
    with op.batch_alter_table('imaging_studies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_imaging_studies_analyzed_at'), ['analyzed_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_imaging_studies_patient_id'), ['patient_id'], unique=False)

    op.create_table('imaging_findings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_pk', sa.Integer(), nullable=False),
    sa.Column('center_x_mm', sa.Float(), nullable=False),
    sa.Column('center_y_mm', sa.Float(), nullable=False),
    sa.Column('center_z_mm', sa.Float(), nullable=False),
    sa.Column('diameter_mm', sa.Float(), nullable=False),
    sa.Column('malignancy', sa.Float(), nullable=True),
    sa.Column('malignancy_std', sa.Float(), nullable=True),
    sa.Column('type', sa.String(length=30), nullable=False),
    sa.Column('category', sa.String(length=30), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['study_pk'], ['imaging_studies.id'],
                            name=op.f('fk_imaging_findings_study_pk_imaging_studies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_imaging_findings'))
    )
    with op.batch_alter_table('imaging_findings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_imaging_findings_study_pk'), ['study_pk'], unique=False)


def downgrade() -> None:
    op.drop_table('imaging_findings')
    op.drop_table('imaging_studies')
    op.drop_table('note_entities')
    op.drop_table('clinical_notes')
