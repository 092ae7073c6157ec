"""The shared tables, as a typed SQLAlchemy 2.0 ORM.

Domains store their results here so that the dashboard, the CLI and batch jobs read one
source of truth: model versions and aliases (the registry), jobs and their per-chunk
checkpoints (the batch engine), predictions, analyst feedback, and an audit log.
Schema changes go through Alembic migrations (``trillium db upgrade``), never ``create_all``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}  # noqa: RUF012 - SQLAlchemy reads it as is


class ModelVersion(Base):
    """One immutable, versioned model artifact set; files live under the registry directory."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_versions_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(50), default="torch")
    architecture: Mapped[str | None] = mapped_column(String(300), nullable=True)
    init_kwargs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    files: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # name -> sha256
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    input_signature: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    data_fingerprint: Mapped[str | None] = mapped_column(String(128), nullable=True)
    autotune: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    aliases: Mapped[list[ModelAlias]] = relationship(back_populates="model_version")


class ModelAlias(Base):
    """A movable name (``production``, ``staging``) that points at one version of a model."""

    __tablename__ = "model_aliases"
    __table_args__ = (UniqueConstraint("name", "alias", name="uq_model_aliases_name_alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    alias: Mapped[str] = mapped_column(String(100))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    model_version: Mapped[ModelVersion] = relationship(back_populates="aliases")


class Job(Base):
    """A batch job; ``key`` identifies the same job (input, output, settings) across restarts."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="running", index=True)
    input_uri: Mapped[str] = mapped_column(Text)
    output_uri: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    rows_in: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_out: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_quarantined: Mapped[int] = mapped_column(BigInteger, default=0)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    chunks: Mapped[list[JobChunk]] = relationship(back_populates="job", cascade="all, delete-orphan")


class JobChunk(Base):
    """The checkpoint of one finished chunk: written in the same step that commits its output."""

    __tablename__ = "job_chunks"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    chunk_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    rows_in: Mapped[int] = mapped_column(Integer, default=0)
    rows_out: Mapped[int] = mapped_column(Integer, default=0)
    rows_quarantined: Mapped[int] = mapped_column(Integer, default=0)
    output_offset: Mapped[int] = mapped_column(BigInteger, default=0)
    quarantine_offset: Mapped[int] = mapped_column(BigInteger, default=0)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    job: Mapped[Job] = relationship(back_populates="chunks")


class Prediction(Base):
    """A scored entity (transaction, study finding, inspected image) with its decision."""

    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_domain_entity", "domain", "entity_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain: Mapped[str] = mapped_column(String(50))
    entity_id: Mapped[str] = mapped_column(String(200))
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), nullable=True
    )
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    score: Mapped[float] = mapped_column(Float)
    decision: Mapped[str | None] = mapped_column(String(50), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class Feedback(Base):
    """An analyst's label on an entity: the ground truth that retraining learns from."""

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_domain_entity", "domain", "entity_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain: Mapped[str] = mapped_column(String(50))
    entity_id: Mapped[str] = mapped_column(String(200))
    prediction_id: Mapped[int | None] = mapped_column(
        ForeignKey("predictions.id", ondelete="SET NULL"), nullable=True
    )
    label: Mapped[str] = mapped_column(String(50))
    analyst: Mapped[str] = mapped_column(String(100), default="")
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEvent(Base):
    """Who did what to which object, for regulated fields that must answer that question."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(300), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ControlLimit(Base):
    """A p-chart centre line fixed from a baseline period (SPC phase I) for one production line.

    Later charts (phase II) judge new inspections against it instead of recomputing the centre
    line from the data they chart, which would let a drifting process hide its own drift.
    Rows are never updated: a new baseline is a new row, the latest one per line applies.
    """

    __tablename__ = "control_limits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    line: Mapped[str] = mapped_column(String(200), index=True)
    p_bar: Mapped[float] = mapped_column(Float)
    n_baseline: Mapped[int] = mapped_column(BigInteger)
    baseline_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    baseline_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(100), default="")


class ClinicalNote(Base):
    """A structured clinical note (medical records); re-structuring the same ``note_id``
    replaces its row and entities rather than adding a second copy."""

    __tablename__ = "clinical_notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    note_id: Mapped[str] = mapped_column(String(200), unique=True)
    patient_id: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    source: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text)
    text_sha256: Mapped[str] = mapped_column(String(64))
    note_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sections: Mapped[list[Any]] = mapped_column(JSON, default=list)
    no_known_allergies: Mapped[bool] = mapped_column(default=False)
    schema_version: Mapped[int] = mapped_column(Integer, default=1)
    structured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)

    entities: Mapped[list[NoteEntity]] = relationship(back_populates="note", cascade="all, delete-orphan",
                                                      passive_deletes=True)


class NoteEntity(Base):
    """One entity mention of a clinical note with its span and ConText attributes."""

    __tablename__ = "note_entities"
    __table_args__ = (Index("ix_note_entities_kind_normalized", "kind", "normalized"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    note_pk: Mapped[int] = mapped_column(ForeignKey("clinical_notes.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text)
    normalized: Mapped[str] = mapped_column(String(200))
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    section: Mapped[str] = mapped_column(String(50), default="")
    negated: Mapped[bool] = mapped_column(default=False)
    uncertain: Mapped[bool] = mapped_column(default=False)
    hypothetical: Mapped[bool] = mapped_column(default=False)
    historical: Mapped[bool] = mapped_column(default=False)
    family: Mapped[bool] = mapped_column(default=False)
    values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    note: Mapped[ClinicalNote] = relationship(back_populates="entities")


class ImagingStudy(Base):
    """An analysed CT series; its findings are rows of ``imaging_findings``."""

    __tablename__ = "imaging_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(128), unique=True)
    study_uid: Mapped[str] = mapped_column(String(128), default="")
    patient_id: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    study_date: Mapped[str | None] = mapped_column(String(8), nullable=True)  # DICOM DA, YYYYMMDD
    source: Mapped[str] = mapped_column(Text, default="")
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), nullable=True
    )
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    analyzed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)

    findings: Mapped[list[ImagingFinding]] = relationship(back_populates="study", cascade="all, delete-orphan",
                                                          passive_deletes=True)


class ImagingFinding(Base):
    """A nodule finding: centre in DICOM patient coordinates (LPS, mm) and its measurements."""

    __tablename__ = "imaging_findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("imaging_studies.id", ondelete="CASCADE"), index=True)
    center_x_mm: Mapped[float] = mapped_column(Float)
    center_y_mm: Mapped[float] = mapped_column(Float)
    center_z_mm: Mapped[float] = mapped_column(Float)
    diameter_mm: Mapped[float] = mapped_column(Float)
    malignancy: Mapped[float | None] = mapped_column(Float, nullable=True)
    malignancy_std: Mapped[float | None] = mapped_column(Float, nullable=True)
    type: Mapped[str] = mapped_column(String(30), default="")
    category: Mapped[str] = mapped_column(String(30), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    study: Mapped[ImagingStudy] = relationship(back_populates="findings")
