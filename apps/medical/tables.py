"""The medical vertical's own tables: structured clinical notes and their entities, analysed CT
studies and their findings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from trillium.core.db.models import Base, utcnow


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
