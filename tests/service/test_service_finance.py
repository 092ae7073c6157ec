"""Finance over real HTTP (``trillium serve``, 2 workers, Redis state): one card's transactions sent
at once are each applied once and score exactly as the in-process scorer replaying them in the
order the state applied them; a list is scored in order; feedback is stored, audited with the
key's owner and refused without the scope; bad input is a 4xx naming the field, never a 500.
"""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from sqlalchemy import select

from tests.service.conftest import REDIS_URL, ServiceProcess, headers
from trillium.finance.online_state import RedisState, tx_hash

pytestmark = pytest.mark.usefixtures("service")


def _txs(prefix: str, n: int, *, card: str, terminal: str, start: datetime, step_s: int = 97) -> list[dict]:
    rng = np.random.default_rng(abs(hash(prefix)) % 2**32)
    return [{"transaction_id": f"{prefix}-{i}", "timestamp": (start + timedelta(seconds=step_s * i)).isoformat(),
             "customer_id": card, "terminal_id": terminal, "amount": round(float(rng.gamma(2.0, 40.0)), 2)}
            for i in range(n)]


@pytest.fixture
def in_process(service_home: dict, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A ``FraudScorer`` loaded from the service's registry, in this process, with its own memory state."""
    from trillium.core.db import reset_connections
    from trillium.finance.pipeline import FraudScorer

    monkeypatch.setenv("TRILLIUM_HOME", str(service_home["home"]))
    reset_connections()
    yield lambda: FraudScorer.from_registry("fraud", "production")
    reset_connections()


def test_one_cards_transactions_at_once_apply_once_and_match_the_in_process_scorer(
        service: ServiceProcess, service_home: dict, in_process: Any) -> None:
    txs = _txs("race", 60, card="card-race", terminal="term-race", start=datetime(2018, 6, 1, 9))
    h = headers(service_home, "finance")
    with httpx.Client(base_url=service.url, timeout=60) as client, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda tx: client.post("/v1/finance/score?features=true", json=tx, headers=h), txs))
        assert [a.status_code for a in answers] == [200] * len(txs), [a.text for a in answers if a.status_code != 200]
        got = {a.json()["transaction_id"]: a.json() for a in answers}
        # the same ids again, at once: answered from the first scoring, not applied again
        again = list(pool.map(lambda tx: client.post("/v1/finance/score", json=tx, headers=h), txs[:12]))
    assert all(a.status_code == 200 and a.json()["replayed"] for a in again)
    assert [a.json()["probability"] for a in again] == [got[tx["transaction_id"]]["probability"] for tx in txs[:12]]
    state = RedisState(REDIS_URL, prefix=f"{service.redis_prefix}:fin")
    of_hash = {tx_hash(tx["transaction_id"]): tx["transaction_id"] for tx in txs}
    applied = [of_hash[h] for h in state.terminal_hashes("term-race")]
    assert sorted(applied) == sorted(got), "each transaction applied exactly once"
    # the in-process scorer fed the transactions in the order the state applied them
    reference = in_process()
    by_id = {tx["transaction_id"]: tx for tx in txs}
    names = reference.model.spec.names
    version = service_home["seed"]["finance"]["model"][1]
    for tx_id in applied:
        tx = dict(by_id[tx_id], timestamp=datetime.fromisoformat(by_id[tx_id]["timestamp"]))
        x, _ = reference.features.update(tx)
        p = float(reference.model.predict_proba(x[None], None)[0])
        have = got[tx_id]
        assert list(have["features"]) == names
        assert np.array_equal(np.array(list(have["features"].values())), x), tx_id
        assert have["probability"] == pytest.approx(p, rel=1e-9, abs=1e-12)
        assert have["model"] == f"fraud:v{version}" and have["model_version"] == version


def test_a_list_is_scored_in_its_order_and_alerts_reach_the_queue(
        service: ServiceProcess, service_home: dict, in_process: Any) -> None:
    txs = _txs("list", 40, card="card-list", terminal="term-list", start=datetime(2018, 6, 2, 9), step_s=31)
    txs[25]["amount"] = 4900.0  # far above this card's habit: an alert with reasons
    resp = httpx.post(f"{service.url}/v1/finance/score", json=txs, headers=headers(service_home, "finance"),
                      timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["count"] == 40 and [r["transaction_id"] for r in body["results"]] == [t["transaction_id"] for t in txs]
    reference = in_process()
    for tx, have in zip(txs, body["results"], strict=True):
        want = reference.score(dict(tx, timestamp=datetime.fromisoformat(tx["timestamp"])))
        assert have["probability"] == pytest.approx(want.probability, rel=1e-9, abs=1e-12)
        assert have["decision"] == want.decision
        assert [r["feature"] for r in have["reasons"]] == [r.feature for r in want.reasons]
    alert = body["results"][25]
    assert alert["decision"] == "alert" and alert["reasons"], alert
    from trillium.core.db import Prediction, connect

    with connect().session() as s:
        stored = s.scalars(select(Prediction).where(Prediction.entity_id == "list-25")).all()
    assert len(stored) == 1 and stored[0].decision == "alert" and stored[0].details["source"] == "service"


def test_feedback_is_stored_audited_with_the_key_owner_and_needs_the_scope(
        service: ServiceProcess, service_home: dict, in_process: Any) -> None:
    url = f"{service.url}/v1/finance/feedback"
    body = {"transaction_id": "list-25", "label": "fraud", "comment": "confirmed by phone"}
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers={"X-API-Key": "trl_000000000000_" + "x" * 43}).status_code == 401
    assert httpx.post(url, json=body, headers=headers(service_home, "viewer")).status_code == 403
    assert httpx.post(url, json=body, headers=headers(service_home, "medical")).status_code == 403
    resp = httpx.post(url, json=body, headers=headers(service_home, "finance"))
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["analyst"] == "finance-caller" and answer["state_updated"] is True
    from trillium.core.db import AuditEvent, Feedback, connect

    with connect().session() as s:
        fb = s.get(Feedback, answer["feedback_id"])
        audit = s.scalars(select(AuditEvent).where(AuditEvent.action == "finance.feedback.api",
                                                   AuditEvent.target == "list-25")).all()
    assert fb.analyst == "finance-caller" and fb.label == "fraud" and fb.comment == "confirmed by phone"
    assert len(audit) == 1 and audit[0].actor == "finance-caller" and audit[0].details["client"] == "127.0.0.1"
    r = redis.Redis.from_url(REDIS_URL)
    assert r.get(f"{service.redis_prefix}:fin:lbl:list-25") == b"1"  # the online state knows it now


@pytest.mark.parametrize(("body", "content_type", "field"), [
    ('{"transaction_id": "b1", "timestamp": "2018-06-01T10:00:00", "amount": -5}', "application/json", "amount"),
    ('{"transaction_id": "b2", "amount": 5}', "application/json", "timestamp"),
    ('{"transaction_id": "b3", "timestamp": "yesterday", "amount": 5}', "application/json", "timestamp"),
    ('{"transaction_id": "b4", "timestamp": "2018-06-01T10:00:00", "amount": 1e400}', "application/json", "amount"),
    ('{"transaction_id": "b5", "timestamp": "2018-06-01T10:00:00", "amount": 5', "application/json", "body"),
    ("[]", "application/json", "body"),
    ("transaction_id=b6", "text/plain", "body"),
])
def test_bad_input_is_a_4xx_naming_the_field(service: ServiceProcess, service_home: dict, body: str,
                                             content_type: str, field: str) -> None:
    resp = httpx.post(f"{service.url}/v1/finance/score", content=body,
                      headers={**headers(service_home, "finance"), "Content-Type": content_type})
    assert 400 <= resp.status_code < 500, resp.text
    err = resp.json()
    assert err["error"] == "invalid_input" and any(field in f for f in err["fields"]) or field in err["message"], err


def test_a_card_history_model_refuses_a_transaction_without_its_card(service: ServiceProcess,
                                                                     service_home: dict) -> None:
    tx = {"transaction_id": "nocard", "timestamp": "2018-06-01T10:00:00", "amount": 5.0}
    resp = httpx.post(f"{service.url}/v1/finance/score", json=tx, headers=headers(service_home, "finance"))
    assert resp.status_code == 422 and "customer_id" in resp.json()["message"]


def test_a_body_past_the_limit_is_refused_before_it_is_read(service: ServiceProcess, service_home: dict) -> None:
    """Content-Length above request_bytes (64 MiB): 413 at once, naming the limit, without sending it."""
    key = service_home["keys"]["finance"]
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall((f"POST /v1/finance/score HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 200000000\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                data.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0]):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        data = data.decode()
    status = int(data.split(" ", 2)[1])
    body = json.loads(data.split("\r\n\r\n", 1)[1])
    assert status == 413 and body["fields"] == ["request_bytes"] and "200,000,000" in body["message"]


def test_health_readiness_metrics_and_schema(service: ServiceProcess, service_home: dict) -> None:
    assert httpx.get(f"{service.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{service.url}/readyz").json()
    assert ready["status"] == "ready" and ready["database"] == "ok"
    assert all(m["ready"] for m in ready["models"].values()) and "fraud:production" in ready["models"]
    assert httpx.post(f"{service.url}/v1/finance/feedback", json={}).status_code == 401
    tx = _txs("metrics", 1, card="card-m", terminal="term-m", start=datetime(2018, 6, 3, 9))[0]
    assert httpx.post(f"{service.url}/v1/finance/score", json=tx, headers=headers(service_home, "finance")
                      ).status_code == 200
    metrics = httpx.get(f"{service.url}/metrics").text
    assert 'trillium_http_requests_total{method="POST",route="/v1/finance/score",status="200"}' in metrics
    assert 'trillium_http_requests_total{method="POST",route="/v1/finance/feedback",status="401"}' in metrics
    assert "trillium_batch_size_bucket" in metrics and 'trillium_model_version{alias="production",model="fraud"}' \
        in metrics
    assert "trillium_http_request_duration_seconds_bucket" in metrics
    schema = httpx.get(f"{service.url}/openapi.json").json()
    assert "/v1/finance/score" in schema["paths"] and "APIKeyHeader" in json.dumps(schema["components"])
    assert httpx.get(f"{service.url}/docs").status_code == 200


def test_no_secret_reaches_the_log(service: ServiceProcess, service_home: dict) -> None:
    log = service.log()
    for key in service_home["keys"].values():
        assert key not in log and key.split("_", 2)[2] not in log
    assert Path(service.log_path).exists()


def test_the_fast_score_handler_answers_as_fastapis_own(service: ServiceProcess, service_home: dict) -> None:
    """The score route is served by its ``FastRoute`` handler; FastAPI's handler of the same
    signature (``TRILLIUM_SERVE_FAST_ROUTES=0``) must give the same statuses and bodies."""
    plain = ServiceProcess(service_home["home"], workers=1, env={"TRILLIUM_SERVE_FAST_ROUTES": "0"}).wait_ready()
    try:
        h = headers(service_home, "finance")
        txs = _txs("twin", 6, card="card-twin", terminal="term-twin", start=datetime(2018, 6, 3, 9))
        cases: list[tuple[str, str, str]] = [
            ("", json.dumps(txs[0]), "application/json"),
            ("?features=true&explain=1", json.dumps(txs[1]), "application/json"),
            ("?features=yes", json.dumps(txs[2:5]), "application/json; charset=utf-8"),
            ("", json.dumps(txs[0]), "application/json"),  # a replay
            ("?explain=maybe", json.dumps(txs[5]), "application/json"),
            ("", '{"transaction_id": "t1", "timestamp": "2018-06-01T10:00:00", "amount": -5}', "application/json"),
            ("", '[{"transaction_id": "t2", "timestamp": "2018-06-01T10:00:00", "amount": 5}, {"amount": 1}]',
             "application/json"),
            ("", "[]", "application/json"),
            ("", '{"transaction_id": "t3"', "application/json"),
            ("", "42", "application/json"),
            ("", "transaction_id=t4", "text/plain"),
        ]
        answers = []
        for server in (service, plain):
            with httpx.Client(base_url=server.url, timeout=30) as c:
                answers.append([c.post("/v1/finance/score" + q, content=body, headers={**h, "Content-Type": ct})
                                for q, body, ct in cases])
        for (q, body, _), fast, slow in zip(cases, *answers, strict=True):
            assert fast.status_code == slow.status_code, (q, body, fast.text, slow.text)
            if fast.status_code == 200:
                assert fast.json() == slow.json()
            else:
                assert fast.json()["error"] == slow.json()["error"], (fast.text, slow.text)
                # FastAPI names both members of the body's union (body.TransactionIn.amount and
                # body.list[TransactionIn]) and a JSON error's offset (body.23); the fast handler
                # names the member the body is, and "body" for JSON it cannot read
                slow_fields = {".".join(p for p in f.split(".") if p not in ("TransactionIn", "list[TransactionIn]"))
                               for f in slow.json()["fields"]}
                assert fast.json()["fields"], fast.text
                for f in fast.json()["fields"]:
                    assert any(s == f or s.startswith(f + ".") for s in slow_fields), (fast.text, slow.text)
        assert [a.status_code for a in answers[0]] == [200, 200, 200, 200] + [422] * 7
    finally:
        plain.stop()


def test_online_scoring_is_checked_for_drift_day_by_day(service_home: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker samples what it scores per day of the transactions; when a later day arrives the
    closed day is compared with the model's profile and stored as the day's ``online`` run (here
    written at every batch: ``TRILLIUM_MONITOR_FLUSH_SECONDS=0``)."""
    from trillium.core.db import reset_connections
    from trillium.core.monitoring import store

    proc = ServiceProcess(service_home["home"], workers=1, env={"TRILLIUM_MONITOR_FLUSH_SECONDS": "0"}).wait_ready()
    try:
        day1 = _txs("drift-a", 120, card="card-drift", terminal="term-drift", start=datetime(2018, 7, 10, 8), step_s=240)
        day2 = _txs("drift-b", 3, card="card-drift", terminal="term-drift", start=datetime(2018, 7, 11, 8))
        for body in (day1, day2):
            r = httpx.post(f"{proc.url}/v1/finance/score", json=body, headers=headers(service_home, "finance"),
                           timeout=60)
            assert r.status_code == 200, r.text
        monkeypatch.setenv("TRILLIUM_HOME", str(service_home["home"]))
        reset_connections()
        deadline, runs = time.monotonic() + 30, None
        while time.monotonic() < deadline:  # the check runs on its own thread after the flush
            runs = store.runs("fraud", scope="day")
            runs = runs[(runs["label"] == "online") & (runs["day"] == "2018-07-10")]
            if len(runs):
                break
            time.sleep(0.3)
        assert runs is not None and len(runs) == 1, proc.log()[-3000:]
        run = runs.iloc[0]
        assert run["performance"]["rows_scored"] == 120 == run["rows"]
        assert {c["name"] for c in run["columns"]} >= {"amount", "customer_nb_tx_1d"}
        assert (service_home["home"] / "monitoring" / "online" / "fraud").is_dir()
    finally:
        proc.stop()
