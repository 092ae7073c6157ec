"""Requests generated from the service's own OpenAPI schema (Schemathesis 4), and their bookkeeping.

Shared by ``tests/service/test_service_schema.py`` (in ``make test``) and
``benchmarks/fuzz_service.py`` (the same fuzzing at a larger count, written to JSON).

- ``copy_home``: a private copy of a seeded TRILLIUM_HOME (the database through SQLite's backup
  API, so a copy taken while another server writes is consistent). Fuzzing writes: transactions
  into the finance online state and alert queue, feedback rows, stored notes (``store: true``),
  inspections stored on generated lines, audit rows. On the shared home they would change what
  the other service tests read (the similar-case index's note count, a card's history, the day's
  alert budget), so the fuzzed server runs on a copy.
- ``load_schema``: the schema as the running server serves it (``/openapi.json``), with the
  generation settings of a run: examples per operation, deterministic generation, no example
  database, every Hypothesis health check off (the server, not the generator, is under test).
- ``Fuzzer.send``: one request, counted, and its response checked against the schema
  (``CHECK_NAMES``: no 5xx, a documented status, a documented content type and headers, a body valid
  against the response schema), plus the statuses a run expects or forbids; every distinct failure is kept
  with its first reproduction (the request as sent, the key redacted, and the response).
- ``without_a_valid_key`` / ``expected_without_a_key``: the credentials of the run without a valid
  key and the one status a ``/v1`` route may answer it (401); ``with_a_role_key``: a field's or
  the read-only role's key.
- ``ACCEPTED_SHAPES``: how a generated positive case is completed so that it reaches a model
  (a card and terminal for a transaction, with edge timestamps; a decodable image for an upload).
"""

from __future__ import annotations

import collections
import io
import re
import shutil
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import requests
import schemathesis
import schemathesis.checks
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis.config import HealthCheck as SchemathesisHealthCheck
from schemathesis.core.failures import FailureGroup

#: Schemathesis's checks every response goes through.
CHECK_NAMES = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
               "response_headers_conformance", "response_schema_conformance")
#: Health checks that judge the generator (slow or filtered data), not the server: all off.
HEALTH_CHECKS = list(HealthCheck)
#: Seconds one request may take (a CT upload is checked in the request; the rest is milliseconds).
REQUEST_TIMEOUT = 60.0
API_KEY_HEADER = "X-API-Key"
REDACTED = "<redacted>"
_EXCERPT = 1500


def checks() -> list[Any]:
    return [getattr(schemathesis.checks, name) for name in CHECK_NAMES]


def copy_home(src: Path, dst: Path) -> Path:
    """``dst``: ``src``'s database (a consistent snapshot), registry, keys and seed files.

    Left out: server logs (open for writing), the CT results folder (``service/``, written by the
    shared server's background thread while the copy is taken; a done study whose folder is
    missing is answered 404, which the fuzzing exercises as well) and SQLite's side files."""
    dst.mkdir(parents=True, exist_ok=True)
    skip = {"trillium.db", "trillium.db-wal", "trillium.db-shm", "trillium.db-journal", "service"}
    for item in src.iterdir():
        if item.name in skip or (item.name.startswith("serve-") and item.suffix == ".log"):
            continue
        if item.is_dir():
            shutil.copytree(item, dst / item.name, symlinks=True)
        else:
            shutil.copy2(item, dst / item.name)
    source = sqlite3.connect(f"file:{src / 'trillium.db'}?mode=ro", uri=True)
    target = sqlite3.connect(dst / "trillium.db")
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    return dst


def load_schema(url: str, *, examples: int, security_parameters: bool = False) -> Any:
    """The OpenAPI schema served at ``url`` + ``/openapi.json``, set to generate ``examples`` cases
    per operation (fuzzing phase; the examples and coverage phases add their own), deterministically.

    ``security_parameters``: whether generated cases carry (and negate) the ``X-API-Key`` header
    themselves; off, the caller sets the header on each request."""
    config = schemathesis.Config(suppress_health_check=[SchemathesisHealthCheck.all])
    project = config.projects.default
    project.update(base_url=url, request_timeout=REQUEST_TIMEOUT)
    project.generation.update(max_examples=examples, deterministic=True, database="none",
                              with_security_parameters=security_parameters)
    return schemathesis.openapi.from_url(f"{url}/openapi.json", config=config, timeout=30)


def _text(data: bytes | str | None, limit: int = _EXCERPT) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        text = data.decode("utf-8", "backslashreplace")
    else:
        text = data
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def describe(request: requests.PreparedRequest | None, status: int | None, headers: dict[str, Any] | None,
             body: bytes | None) -> dict[str, Any]:
    """A request as sent (the API key redacted) and the response, for a report."""
    sent: dict[str, Any] = {}
    if request is not None:
        sent = {"method": request.method, "url": request.url,
                "headers": {k: (REDACTED if k.lower() == API_KEY_HEADER.lower() else v)
                            for k, v in request.headers.items()
                            if k.lower() not in ("user-agent", "accept-encoding", "connection")},
                "body": _text(request.body)}
    answer = {"status": status, "content_type": (headers or {}).get("content-type", [""])[0] if headers else "",
              "body": _text(body)}
    return {"request": sent, "response": answer}


@dataclass
class Fuzzer:
    """Sends generated cases to one server and keeps the counts and the failures."""

    base_url: str
    session: requests.Session = field(default_factory=requests.Session)
    sent: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: dict[str, collections.Counter[int]] = field(default_factory=lambda: collections.defaultdict(
        collections.Counter))
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    failure_counts: collections.Counter[str] = field(default_factory=collections.Counter)
    seconds: float = 0.0

    @staticmethod
    def label(case: Any) -> str:
        return f"{case.operation.method.upper()} {case.operation.path}"

    def send(self, case: Any, *, headers: dict[str, str] | None = None, run: str = "",
             expect: Iterable[int] | None = None, forbid: Iterable[int] = (), raise_failures: bool = True,
             as_group: bool = True) -> Any:
        """Send ``case`` (with ``headers``), count it, check the response against the schema, and its
        status against ``expect`` (the statuses allowed, None: any) and ``forbid``. A failure is
        recorded and, with ``raise_failures``, raised: Schemathesis's ``FailureGroup`` for the schema
        checks (what its ``parametrize`` reports), or with ``as_group=False`` a plain
        ``AssertionError`` with the same text (Hypothesis's own ``@given`` does not shrink a case
        that fails with an exception group)."""
        label = self.label(case)
        key = f"{run}: {label}" if run else label
        t0 = time.perf_counter()
        try:
            response = case.call(base_url=self.base_url, session=self.session, headers=headers,
                                 timeout=REQUEST_TIMEOUT)
        except requests.RequestException as exc:
            self.seconds += time.perf_counter() - t0
            self.sent[key] += 1
            self.statuses[key][0] += 1
            self._record(f"{key} | no response ({type(exc).__name__})",
                         {**describe(exc.request if isinstance(exc.request, requests.PreparedRequest) else None,
                                     None, None, None), "error": f"{type(exc).__name__}: {exc}"})
            raise
        self.seconds += time.perf_counter() - t0
        self.sent[key] += 1
        self.statuses[key][response.status_code] += 1
        problems: list[tuple[str, str]] = []
        group: FailureGroup | None = None
        try:
            case.validate_response(response, checks=checks(), headers=headers)
        except FailureGroup as exc:
            group = exc
            problems += [(f.title, f.message) for f in exc.exceptions]
        wanted = set(expect) if expect is not None else None
        if wanted is not None and response.status_code not in wanted:
            problems.append((f"status {response.status_code}, expected {sorted(wanted)}", ""))
        if response.status_code in set(forbid):
            problems.append((f"status {response.status_code}, which this run must never get", ""))
        for title, message in problems:
            self._record(f"{key} | {title} | {response.status_code}",
                         {**describe(response.request, response.status_code, response.headers, response.content),
                          "check": title, "message": _text(message, 3000),
                          "curl": _redact(case.as_curl_command(headers=headers, base_url=self.base_url))})
        if problems and raise_failures:
            if group is not None:
                if as_group:
                    raise group
                raise AssertionError(str(group)) from None
            raise AssertionError(f"{key}: {problems[0][0]}\n{case.as_curl_command(base_url=self.base_url)}")
        return response

    def _record(self, signature: str, data: dict[str, Any]) -> None:
        self.failure_counts[signature] += 1
        self.failures.setdefault(signature, data)

    # ------------------------------------------------------------------ summaries
    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def server_errors(self) -> dict[str, int]:
        return {key: n for key, counts in self.statuses.items() for status, n in counts.items() if status >= 500}

    def report(self) -> dict[str, Any]:
        return {
            "requests": self.total,
            "seconds_in_requests": round(self.seconds, 2),
            "requests_per_operation": dict(sorted(self.sent.items())),
            "status_counts": {key: {str(s): n for s, n in sorted(c.items())} for key, c in sorted(self.statuses.items())},
            "failures": [{"signature": sig, "count": self.failure_counts[sig], **data}
                         for sig, data in self.failures.items()],
        }

    def summary(self) -> str:
        lines = [f"{self.total:,} requests in {self.seconds:.1f} s of requests"]
        for key, counts in sorted(self.statuses.items()):
            lines.append(f"  {key}: {sum(counts.values())} ({', '.join(f'{s}: {n}' for s, n in sorted(counts.items()))})")
        return "\n".join(lines)

    def failure_report(self) -> str:
        out = []
        for sig, data in self.failures.items():
            out.append(f"--- {sig} (x{self.failure_counts[sig]})\n{data.get('curl') or data.get('request')}\n"
                       f"-> {data['response']['status']} {data['response']['body']}\n{data.get('message', '')}")
        return "\n".join(out)


def _redact(curl: str) -> str:
    """A curl command without the API key's value."""
    return re.sub(r"(?i)(-H '" + API_KEY_HEADER + r": )[^']*'", r"\1$KEY'", curl)


# --------------------------------------------------------------------------- runs without a valid key

#: Routes that need no key.
UNGUARDED = ("/healthz", "/readyz", "/metrics")
KEY_VARIANTS = ("none", "unknown", "malformed", "revoked")


#: The roles' keys of the harness (``tests/service/conftest.py``), each with the scopes of one field
#: or read-only: a route outside the key's scopes answers 403.
ROLE_KEYS = ("finance", "medical", "manufacturing", "viewer")


def pick(case: Any, options: tuple[str, ...]) -> str:
    """One of ``options``, from the case's content: the same case always gets the same one, also
    while Hypothesis shrinks it."""
    seen = repr((case.method, case.path_parameters, case.query, case.body)).encode()
    return options[zlib.crc32(seen) % len(options)]


def _drop_key(case: Any) -> None:
    if case.headers:
        case.headers = {k: v for k, v in case.headers.items() if k.lower() != API_KEY_HEADER.lower()}


def without_a_valid_key(case: Any, revoked_key: str) -> tuple[str, dict[str, str]]:
    """(variant, headers): no key, an unknown well-formed one, a malformed one or a revoked one
    (``pick``). Any ``X-API-Key`` the case itself carries is dropped."""
    variant = pick(case, KEY_VARIANTS)
    key = {"none": None, "unknown": "trl_000000000000_" + "A" * 43, "malformed": "not-a-trillium-key",
           "revoked": revoked_key}[variant]
    _drop_key(case)
    return variant, ({} if key is None else {API_KEY_HEADER: key})


def with_a_role_key(case: Any, keys: dict[str, str]) -> tuple[str, dict[str, str]]:
    """(role, headers): the key of one of ``ROLE_KEYS`` (``pick``)."""
    role = pick(case, ROLE_KEYS)
    _drop_key(case)
    return role, {API_KEY_HEADER: keys[role]}


def expected_without_a_key(case: Any) -> set[int] | None:
    """401 for every ``/v1`` request, a method the route does not have included (the key is checked
    before routing, so a caller without one learns nothing of the routes); no expectation on the
    unguarded routes."""
    if case.operation.path.startswith(UNGUARDED):
        return None
    return {401}


# --------------------------------------------------------------------------- cases that reach a model

#: Valid ISO 8601 times at the ends of what Python's datetime holds, with and without a zone: the
#: schema's date-time generator practically never draws them (a year-1 time east of UTC is before
#: 0001-01-01 in UTC).
EDGE_TIMESTAMPS = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00",
                   "9999-12-31T23:59:59.999999Z", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59.5+00:00",
                   "2018-05-13T23:59:59+23:59", "2018-05-13T00:00:00-23:59"]
_OFFSETS = st.builds(lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-(24 * 60 - 1), 24 * 60 - 1))
TIMESTAMPS = st.one_of(st.sampled_from(EDGE_TIMESTAMPS),
                       st.datetimes(timezones=st.none() | _OFFSETS).map(datetime.isoformat))


def fill_card(case: Any, data: Any) -> None:
    """A transaction without its card or terminal gets one from a small pool (card-history models
    need both: without them every case is the same 422), so generated transactions reach the model;
    its timestamp is kept or replaced by one of ``TIMESTAMPS``."""
    items = case.body if isinstance(case.body, list) else [case.body]
    for tx in items:
        if isinstance(tx, dict):
            for name in ("customer_id", "terminal_id"):
                if tx.get(name) is None:
                    tx[name] = data.draw(st.sampled_from([f"fz-{name[0]}{i}" for i in range(4)]))
            if "timestamp" in tx:
                tx["timestamp"] = data.draw(st.one_of(st.just(tx["timestamp"]), TIMESTAMPS))


@st.composite
def images(draw: Any) -> bytes:
    """A decodable image: PNG, JPEG, BMP or TIFF; grey or colour, 8 bit (16-bit grey in PNG and TIFF);
    1 to 96 pixels a side; random pixels."""
    from PIL import Image

    fmt = draw(st.sampled_from(["PNG", "JPEG", "BMP", "TIFF"]))
    mode = draw(st.sampled_from(["L", "RGB"] if fmt in ("JPEG", "BMP") else ["L", "RGB", "I;16"]))
    height, width = draw(st.integers(1, 96)), draw(st.integers(1, 96))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if mode == "I;16":
        pixels = rng.integers(0, 65535, (height, width), dtype=np.uint16, endpoint=True)
    else:
        pixels = rng.integers(0, 255, (height, width, 3) if mode == "RGB" else (height, width), dtype=np.uint8,
                              endpoint=True)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def real_image(case: Any, data: Any) -> None:
    """The generated ``image`` part replaced by a decodable image (``images``); the other form
    fields and the query as generated."""
    if isinstance(case.body, dict):
        case.body["image"] = data.draw(images())


#: Operation path -> how a positive case is completed (with Hypothesis's ``data``) to reach a model.
ACCEPTED_SHAPES: dict[str, Callable[[Any, Any], None]] = {
    "/v1/finance/score": fill_card,
    "/v1/manufacturing/inspect": real_image,
}
