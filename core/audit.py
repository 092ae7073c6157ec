"""Reading the audit log: who did what, to which object, from where.

The log is append-only (the application only inserts through ``Database.audit``; migration
0005 makes the database refuse UPDATE and DELETE on ``audit_log``). This module only reads it,
to answer "who saw this patient's data?" (``trillium audit --patient``) and to show an
administrator the latest entries.

A row concerns a patient when its ``target`` is the patient id or its details name the patient
(``patient`` or ``patient_id``); the dashboard's and the service's patient-data events carry it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select

from trillium.core.db import AuditEvent, Database, _whoami
from trillium.core.errors import TrilliumError

__all__ = ["audit_patients", "audit_rows", "cli_actor", "parse_since"]

#: Object ids named per audit row; a row about a patient with more lists the first ones and the count.
MAX_IDS_PER_ROW = 200


def cli_actor() -> str:
    """Who a command-line action is attributed to: ``cli:<OS login name>``. The command line has
    no Trillium login; the operating system's account is the identified user (PCI DSS 8), so no
    command takes a free-text name for the person acting."""
    return f"cli:{_whoami()}"


def audit_patients(db: Database, action: str, reads: Iterable[tuple[str | None, str]], *,
                   actor: str | None = None, id_key: str = "ids", **details: Any) -> int:
    """One audit row per patient for a read of many objects (notes, studies): ``reads`` gives
    (patient id, object id) pairs. Grouping by patient keeps ``trillium audit --patient`` exact
    while a batch of ten thousand notes writes one row per patient, not per note. Objects with no
    patient id share one row with an empty target. Returns the number of rows written."""
    by_patient: dict[str, list[str]] = {}
    for patient, obj in reads:
        missing = patient is None or (isinstance(patient, float) and math.isnan(patient))  # NaN: a table read back
        by_patient.setdefault("" if missing else str(patient), []).append(str(obj))
    who = actor or _whoami()
    with db.session() as s:  # one transaction for the whole read, not one per patient
        s.add_all([AuditEvent(actor=who, action=action, target=patient,
                              details={"patient": patient, "count": len(ids), id_key: ids[:MAX_IDS_PER_ROW], **details})
                   for patient, ids in by_patient.items()])
    return len(by_patient)


def parse_since(text: str) -> datetime:
    """An ISO date or time (UTC when no offset is given), or a span back from now: 30m, 12h, 7d."""
    raw = (text or "").strip()
    units = {"m": 60, "h": 3600, "d": 86400}
    if raw[:-1].isdigit() and raw[-1:] in units:
        from datetime import timedelta

        return datetime.now(UTC) - timedelta(seconds=int(raw[:-1]) * units[raw[-1]])
    try:
        t = datetime.fromisoformat(raw)
    except ValueError:
        raise TrilliumError(f"--since {text!r} is neither an ISO time (2026-12-01 or 2026-12-01T08:00) "
                            "nor a span such as 30m, 12h or 7d") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def audit_rows(db: Database, *, patient: str | None = None, user: str | None = None,
               since: datetime | None = None, action: str | None = None,
               limit: int | None = None) -> list[dict[str, Any]]:
    """Audit rows, newest first, filtered in SQL (bound parameters) by patient, actor, time and
    action prefix."""
    q = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
    if patient:
        q = q.where(or_(AuditEvent.target == patient,
                        AuditEvent.details["patient"].as_string() == patient,
                        AuditEvent.details["patient_id"].as_string() == patient))
    if user:
        q = q.where(AuditEvent.actor == user)
    if since is not None:
        q = q.where(AuditEvent.at >= since)
    if action:
        q = q.where(AuditEvent.action.startswith(action, autoescape=True))
    if limit:
        q = q.limit(limit)
    with db.session() as s:
        return [{"id": e.id, "at": e.at, "actor": e.actor, "action": e.action, "target": e.target,
                 "origin": (e.details or {}).get("origin", "") or (e.details or {}).get("client", ""),
                 "details": e.details or {}} for e in s.scalars(q)]
