"""Finance routes of the HTTP service: real-time scoring and analyst feedback.

- ``POST /v1/finance/score``: one transaction (a JSON object) or a list (a JSON array). Each is
  applied to the card's and terminal's online state exactly once, whichever worker serves it (a
  retried transaction id gets its first answer back, marked ``replayed``), and answered with its
  probability, decision, reasons and the model version that scored it. Requests go through the
  core's dynamic batcher, so concurrent requests in a worker share one model call
  (``trillium.finance.serving``). Alerts are stored in the alert queue as the batch job's are.
- ``POST /v1/finance/feedback``: an analyst's label; stored, audited with the key's owner, and
  taught to the online state at once.

The state is ``RedisState`` when the server has a Redis URL (always with several workers), else
this worker's memory.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, field_validator

from trillium.core.access import KeyInfo
from trillium.core.registry import ModelRecord
from trillium.core.service.context import ServiceContext
from trillium.core.service.errors import ERROR_RESPONSES
from trillium.core.service.fastroute import FastRoute, JsonBody, query_flag, served_by
from trillium.finance.features import InMemoryState
from trillium.finance.pipeline import ALERT, FraudScorer
from trillium.finance.records import FRAUD
from trillium.finance.serving import LocalState, OnlineBatchScorer, ScoreRequest

__all__ = ["router"]

log = logging.getLogger(__name__)
MODEL_NAME = "fraud"
MAX_LIST = 100_000

Ident = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")] | Annotated[
    int, Field(ge=0, le=2**63 - 1)]
EARLIEST, LATEST = 1970, 2999  # a card transaction outside these years is a malformed record


class TransactionIn(BaseModel):
    """One card transaction. Extra numeric fields are passed to models trained with them."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "transaction_id": "tx-1001", "timestamp": "2018-05-13T10:42:00", "customer_id": "c-17",
        "terminal_id": "t-4021", "amount": 87.5}]})

    transaction_id: Ident = Field(description="Unique id; a repeated id is answered from the first scoring.")
    timestamp: datetime = Field(description="When the card was used (ISO 8601; without a zone, UTC).")
    customer_id: Ident | None = Field(None, description="The card (or customer); required by card-history models.")
    terminal_id: Ident | None = Field(None, description="The terminal; required by card-history models.")
    amount: float = Field(ge=0, le=1e9, allow_inf_nan=False, description="Amount in the card's currency.")

    @field_validator("timestamp")
    @classmethod
    def _plausible(cls, value: datetime) -> datetime:
        if not EARLIEST <= value.year <= LATEST:
            raise ValueError(f"a transaction's year must be between {EARLIEST} and {LATEST}")
        return value


class Reason(BaseModel):
    feature: str
    value: float
    contribution: float
    text: str

    model_config = ConfigDict(extra="allow")


SCORE_BODY = JsonBody(TransactionIn, Annotated[list[TransactionIn], Field(min_length=1, max_length=MAX_LIST)])


class ScoreOut(BaseModel):
    transaction_id: str | int
    probability: float = Field(description="Calibrated probability of fraud.")
    decision: Literal["alert", "pass", "over_budget"] = Field(
        description="alert: review it; over_budget: above the threshold after the day's alert budget was used.")
    threshold: float
    reasons: list[Reason] = Field(description="The features that pushed the score most (alerts, or all with explain).")
    model: str = Field(description="The model and version that scored it, e.g. fraud:v3.")
    model_version: int | None
    features: dict[str, float] | None = Field(None, description="The feature vector (with ?features=true).")
    replayed: bool = Field(False, description="True when this id was scored before: the first answer, unchanged.")


class ScoreListOut(BaseModel):
    results: list[ScoreOut]
    count: int


class FeedbackIn(BaseModel):
    transaction_id: Ident
    label: Literal["fraud", "genuine"]
    comment: str = Field("", max_length=2000, pattern=r"^[^\x00]*$")


class FeedbackOut(BaseModel):
    feedback_id: int
    transaction_id: str
    label: str
    analyst: str = Field(description="The key's owner, recorded as the analyst.")
    state_updated: bool = Field(description="Whether the online state took the label (it holds the transaction).")


def _state(ctx: ServiceContext) -> Any:
    if ctx.settings.redis_url:
        from trillium.finance.online_state import RedisState

        prefix = os.environ.get("TRILLIUM_REDIS_PREFIX", "trillium")
        return RedisState(ctx.settings.redis_url, prefix=f"{prefix}:fin")
    return LocalState(InMemoryState())


def router(ctx: ServiceContext) -> APIRouter:
    r = APIRouter()
    holder: dict[str, Any] = {}

    def load(record: ModelRecord, _previous: Any) -> FraudScorer:
        scorer = FraudScorer.from_registry(MODEL_NAME, record.version, registry=ctx.registry)
        return scorer

    live = ctx.live_model(MODEL_NAME, load)

    def start_state() -> None:
        from trillium.core.monitoring.online import service_collector

        # what this worker scores, sampled per day of the transactions and checked for drift
        collector = service_collector(ctx, MODEL_NAME)
        holder["online"] = OnlineBatchScorer(_state(ctx), observer=collector.observe if collector else None)

    ctx.on_startup(start_state)

    def score_batch(requests: list[ScoreRequest]) -> list[Any]:
        scorer, record = live.current_with_record()  # one version answers the whole batch
        out = holder["online"].score_requests(scorer, record.version if record else None, requests)
        alerts = [(req, res) for req, results in zip(requests, out, strict=True) if not isinstance(results, Exception)
                  for res in results if res.decision == ALERT and not res.replayed]
        if alerts:
            _store_alerts(ctx, alerts, record)
        return out

    batcher = ctx.batcher("finance-score", score_batch, stack=False)  # the server's --batcher (async by default)

    async def answer(txs: list[dict[str, Any]], single: bool, explain: bool, features: bool) -> Response:
        out = await ctx.run_batched(batcher, ScoreRequest(txs, explain=explain, features=features))
        if isinstance(out, Exception):
            raise out
        # serialised here rather than validated again against the response model (which documents
        # it): for a list of thousands that validation costs as much as scoring
        payload = out[0].as_dict() if single else {"results": [o.as_dict() for o in out], "count": len(out)}
        return Response(json.dumps(payload, separators=(",", ":")), media_type="application/json")

    async def score_fast(request: Request) -> Response:
        """The score route's handler (``FastRoute``): the key the middleware verified, the body
        parsed and validated by pydantic-core in one call, no dependency solving."""
        await ctx.request_key(request, "finance:write")
        explain, features = query_flag(request, "explain"), query_flag(request, "features")
        value, single = SCORE_BODY.parse(request, await request.body())
        txs = [value.model_dump()] if single else [t.model_dump() for t in value]
        return await answer(txs, single, explain, features)

    @served_by(score_fast)
    async def score(
        request: Request,
        body: Annotated[TransactionIn | Annotated[list[TransactionIn], Field(min_length=1, max_length=MAX_LIST)],
                        Body()],
        explain: Annotated[bool, Query(description="Reasons for every transaction, not only alerts.")] = False,
        features: Annotated[bool, Query(description="Return each transaction's feature vector.")] = False,
        key: KeyInfo = ctx.require("finance:write"),
    ) -> Any:
        """The route's contract (its OpenAPI schema comes from this signature); ``score_fast``
        answers it. Served through FastAPI's own handler this gives the same answers."""
        single = isinstance(body, TransactionIn)
        txs = [body.model_dump()] if single else [t.model_dump() for t in body]
        return await answer(txs, single, explain, features)

    r.add_api_route("/score", score, methods=["POST"], route_class_override=FastRoute,
                    response_model=ScoreOut | ScoreListOut, responses=ERROR_RESPONSES,
                    summary="Score one transaction (an object) or a list (an array)")

    @r.post("/feedback", response_model=FeedbackOut, responses=ERROR_RESPONSES,
            summary="An analyst's label for a transaction (stored, audited, taught to the online state)")
    async def feedback(request: Request, body: FeedbackIn, key: KeyInfo = ctx.require("finance:write")) -> Any:
        from trillium.finance.store import record_feedback

        def write() -> tuple[int, bool]:
            fid = record_feedback(body.transaction_id, body.label, db=ctx.db, analyst=key.owner, comment=body.comment)
            taught = holder["online"].state.set_label(body.transaction_id, body.label == FRAUD)
            ctx.audit(request, key, "finance.feedback.api", target=str(body.transaction_id), label=body.label,
                      feedback_id=fid)
            return fid, bool(taught)

        fid, taught = await run_in_threadpool(write)
        return {"feedback_id": fid, "transaction_id": str(body.transaction_id), "label": body.label,
                "analyst": key.owner, "state_updated": taught}

    return r


def _store_alerts(ctx: ServiceContext, alerts: list[tuple[ScoreRequest, Any]], record: ModelRecord | None) -> None:
    """Put real-time alerts in the analysts' queue (the predictions table), like the batch job's."""
    from trillium.core.db import Prediction
    from trillium.finance.pipeline import DOMAIN

    by_id = {str(t["transaction_id"]): t for req, _ in alerts for t in req.transactions}
    with ctx.db.session() as s:
        for _, res in alerts:
            tx = by_id.get(str(res.transaction_id), {})
            s.add(Prediction(
                domain=DOMAIN, entity_id=str(res.transaction_id), model_version_id=record.id if record else None,
                score=res.probability, decision=ALERT,
                details={"customer_id": _text(tx.get("customer_id")), "terminal_id": _text(tx.get("terminal_id")),
                         "amount": float(tx.get("amount", 0.0)), "timestamp": _iso(tx.get("timestamp")),
                         "reasons": res.reasons, "model": res.model, "source": "service"}))


def _text(v: Any) -> str | None:
    return None if v is None else str(v)


def _iso(v: Any) -> str | None:
    return v.isoformat() if hasattr(v, "isoformat") else (None if v is None else str(v))


def demo_call(client: Any) -> str:
    """The demo's call: score one transaction (``trillium demo``'s last step)."""
    tx = {"transaction_id": "demo-service-1", "timestamp": "2018-05-20T23:41:00", "customer_id": "demo-card",
          "terminal_id": "demo-terminal", "amount": 2480.0}
    r = client.post("/v1/finance/score", json=tx)
    r.raise_for_status()
    a = r.json()
    return f"POST /v1/finance/score: p={a['probability']:.3f}, {a['decision']} ({a['model']})"
