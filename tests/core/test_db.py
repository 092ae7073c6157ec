"""The schema comes from Alembic migrations and matches the ORM on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select

from trillium.core import db as dbmod
from trillium.core.db import AuditEvent, Feedback, Prediction
from trillium.core.verticals import load_tables


def test_migrations_create_every_table_and_match_the_orm(database: dbmod.Database) -> None:
    assert {"model_versions", "model_aliases", "jobs", "job_chunks", "predictions", "feedback", "audit_log"} <= set(
        database.tables()
    )
    assert dbmod.current_revision(database.engine) == dbmod.head_revision()
    load_tables()  # the verticals' own tables, found through their entry points
    assert {"control_limits", "clinical_notes", "note_entities", "imaging_studies", "imaging_findings"} <= set(
        dbmod.Base.metadata.tables)
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), dbmod.Base.metadata)
    assert diff == [], f"migrations and ORM disagree: {diff}"


def test_upgrade_is_idempotent(database: dbmod.Database) -> None:
    database.upgrade()
    assert dbmod.current_revision(database.engine) == dbmod.head_revision()


def test_predictions_feedback_and_audit_round_trip(database: dbmod.Database) -> None:
    with database.session() as s:
        p = Prediction(domain="finance", entity_id="tx-1", score=0.93, decision="alert", details={"reasons": ["amount"]})
        s.add(p)
        s.flush()
        s.add(Feedback(domain="finance", entity_id="tx-1", prediction_id=p.id, label="fraud", analyst="ana"))
    database.audit("label", target="tx-1", actor="ana", label="fraud")
    with database.session() as s:
        pred = s.scalars(select(Prediction).where(Prediction.entity_id == "tx-1")).one()
        fb = s.scalars(select(Feedback).where(Feedback.prediction_id == pred.id)).one()
        ev = s.scalars(select(AuditEvent)).one()
    assert pred.details == {"reasons": ["amount"]} and pred.score == 0.93
    assert fb.label == "fraud"
    assert ev.actor == "ana" and ev.details == {"label": "fraud"}


def test_rollback_on_error_leaves_nothing(database: dbmod.Database) -> None:
    try:
        with database.session() as s:
            s.add(Prediction(domain="finance", entity_id="tx-2", score=0.1))
            s.flush()
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with database.session() as s:
        assert s.scalars(select(Prediction)).all() == []


def test_default_url_is_sqlite_in_trillium_home(trillium_home) -> None:
    db = dbmod.connect()
    assert db.url == f"sqlite:///{trillium_home.resolve() / 'trillium.db'}"
    assert (trillium_home / "trillium.db").exists()
