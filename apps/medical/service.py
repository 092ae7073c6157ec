"""The medical vertical's routes in the HTTP service, mounted by the core under ``/v1/medical``.

One router per half of the vertical, each in its own module:

- clinical notes: ``trillium.medical.records.service.notes_router`` (``/notes/...``);
- chest CT: ``trillium.medical.imaging.service.ct_router``, included when that module exists.
  Adding it is all the CT routes need: this file names it and never has to change.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from fastapi import APIRouter

from trillium.core.service.context import ServiceContext

__all__ = ["CT_MODULE", "router"]

CT_MODULE = "trillium.medical.imaging.service"


def router(ctx: ServiceContext) -> APIRouter:
    """The notes routes, and the CT routes when ``trillium.medical.imaging.service`` defines ``ct_router``.

    A CT module that exists but fails to import is an error (the service refuses to start and
    says why), never a silent absence of the CT routes.
    """
    from trillium.medical.records.service import notes_router

    api = APIRouter()
    api.include_router(notes_router(ctx))
    if importlib.util.find_spec(CT_MODULE) is not None:
        ct_router = getattr(importlib.import_module(CT_MODULE), "ct_router", None)
        if ct_router is not None:
            api.include_router(ct_router(ctx))
    return api


def demo_call(client: Any) -> str:
    """The demo's call: structure one short note (``trillium demo``'s last step)."""
    text = "Denies chest pain. History of type 2 diabetes. Metformin 500 mg PO BID. BP 148/92."
    r = client.post("/v1/medical/notes/structure", json={"text": text})
    r.raise_for_status()
    a = r.json()
    negated = sum(1 for e in a["entities"] if e.get("negated"))
    return f"POST /v1/medical/notes/structure: {len(a['entities'])} entities ({negated} negated), " \
           f"{len(a.get('medications', []))} medication(s)"
