"""Property-based requests generated from the service's OpenAPI schema (Schemathesis), over HTTP.

A ``trillium serve`` of its own (2 workers, like the shared ``service``) on a copy of the seeded
home (``schema_fuzz.copy_home`` says why: fuzzing stores notes, feedback, alerts, inspections and
card history that the other service tests read). Its ``/openapi.json`` is the schema under test;
every operation in it is fuzzed, none is left out:

- with the admin key (every scope): Schemathesis's examples, coverage and fuzzing phases, positive
  and negative data, ``TRILLIUM_SCHEMA_EXAMPLES`` fuzzing cases per operation. Every response must
  pass ``schema_fuzz.CHECK_NAMES``: no 5xx, a documented status, content type and headers, a body
  valid against its response schema. The CT routes that need an existing study (status, files)
  get generated ids and names like any other parameter (404 and 422 answers, checked too);
  ``test_a_done_study_and_its_files_match_the_schema`` uploads a real study, waits for its
  analysis, checks its 200 answers and fuzzes file names on it.
- without a valid key (none, unknown, malformed or revoked): every ``/v1`` route must answer 401
  whatever the request; the health, readiness and metrics routes (no key needed) must conform.
- with the key of one field's role or the read-only viewer: 403 outside the key's scopes (writes
  included: storing a note, an inspection on a line), never 401, every answer conforming.
- ``test_generated_requests_that_reach_the_models_get_documented_answers``: positive cases
  completed so that they get past the first refusal and reach the model (``ACCEPTED_SHAPES``).
- ``test_the_fuzzing_sent_at_least_1000_requests_and_met_no_5xx``: the requests actually sent
  (counted at each call, Hypothesis's shrinking included), at least 1,000 at the default count,
  none answered 5xx. It prints the counts per run, operation and status.

Hypothesis runs derandomized (the same cases every run), without a deadline or an example database.
``benchmarks/fuzz_service.py`` runs the same fuzzing at a larger count and writes JSON.
"""

from __future__ import annotations

import io
import math
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.service.conftest import ServiceProcess, redis_or_fail
from tests.service.schema_fuzz import (
    ACCEPTED_SHAPES,
    API_KEY_HEADER,
    HEALTH_CHECKS,
    Fuzzer,
    copy_home,
    expected_without_a_key,
    load_schema,
    with_a_role_key,
    without_a_valid_key,
)

#: Fuzzing cases per operation with the admin key (the examples and coverage phases add theirs).
DEFAULT_EXAMPLES = 100
EXAMPLES = int(os.environ.get("TRILLIUM_SCHEMA_EXAMPLES", DEFAULT_EXAMPLES))
#: Without a valid key only the authentication is under test: fewer cases.
ANONYMOUS_EXAMPLES = max(1, EXAMPLES // 4)
#: The issue's floor, scaled down when TRILLIUM_SCHEMA_EXAMPLES asks for fewer cases.
MIN_REQUESTS = math.ceil(1_000 * min(1.0, EXAMPLES / DEFAULT_EXAMPLES))
DONE_SECONDS = 180.0  # a phantom study analyses in about 7 s on this 2-core machine

FUZZ_SETTINGS: dict[str, Any] = {"deadline": None, "derandomize": True, "database": None,
                                 "suppress_health_check": HEALTH_CHECKS, "print_blob": False}


@pytest.fixture(scope="module")
def fuzz_home(service_home: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A copy of the seeded home with the harness's keys, plus a revoked one."""
    from trillium.core.access import create_key, revoke_key
    from trillium.core.db import connect

    home = copy_home(service_home["home"], tmp_path_factory.mktemp("schema-fuzz-home"))
    db = connect(f"sqlite:///{home / 'trillium.db'}")
    revoked, info = create_key(db, "revoked-caller", role="admin", description="revoked before the fuzzing")
    revoke_key(db, info.key_id)
    db.engine.dispose()
    return {"home": home, "seed": service_home["seed"], "keys": {**service_home["keys"], "revoked": revoked}}


@pytest.fixture(scope="module")
def fuzz_server(fuzz_home: dict) -> Iterator[ServiceProcess]:
    redis_or_fail()
    server = ServiceProcess(fuzz_home["home"], workers=2).wait_ready()
    yield server
    code = server.stop()
    assert code == 0, f"the fuzzed server exited with {code}:\n{server.log()[-4000:]}"


@pytest.fixture(scope="module")
def fuzzer(fuzz_server: ServiceProcess) -> Iterator[Fuzzer]:
    f = Fuzzer(fuzz_server.url)
    yield f
    f.session.close()


@pytest.fixture(scope="module")
def admin_schema(fuzz_server: ServiceProcess) -> Any:
    return load_schema(fuzz_server.url, examples=EXAMPLES)


@pytest.fixture(scope="module")
def anonymous_schema(fuzz_server: ServiceProcess) -> Any:
    return load_schema(fuzz_server.url, examples=ANONYMOUS_EXAMPLES)


@pytest.fixture(autouse=True)
def _lazy_schema_node_id(request: pytest.FixtureRequest) -> None:
    """Schemathesis 4.32's lazy schemas name each operation's subtest by rewriting the item's
    ``_nodeid``, an attribute pytest 9.2 no longer has (``AttributeError`` before any request):
    give the item one (its own id), so the lazy schema runs."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def admin_headers(fuzz_home: dict) -> dict[str, str]:
    return {API_KEY_HEADER: fuzz_home["keys"]["admin"]}


admin = schemathesis.pytest.from_fixture("admin_schema")
anonymous = schemathesis.pytest.from_fixture("anonymous_schema")


@admin.parametrize()
@settings(max_examples=EXAMPLES, **FUZZ_SETTINGS)
def test_generated_requests_with_the_admin_key_get_documented_answers(case: Any, fuzzer: Fuzzer,
                                                                       fuzz_home: dict) -> None:
    fuzzer.send(case, headers=admin_headers(fuzz_home), run="admin")


@anonymous.parametrize()
@settings(max_examples=ANONYMOUS_EXAMPLES, **FUZZ_SETTINGS)
def test_generated_requests_without_a_valid_key_get_401(case: Any, fuzzer: Fuzzer, fuzz_home: dict) -> None:
    variant, headers = without_a_valid_key(case, fuzz_home["keys"]["revoked"])
    fuzzer.send(case, headers=headers, run=f"no valid key ({variant})", expect=expected_without_a_key(case))


@anonymous.parametrize()
@settings(max_examples=ANONYMOUS_EXAMPLES, **FUZZ_SETTINGS)
def test_generated_requests_with_a_field_or_read_only_key_get_documented_answers(case: Any, fuzzer: Fuzzer,
                                                                                 fuzz_home: dict) -> None:
    """A valid key of one field (or read-only): 403 outside its scopes, never 401, and conforming."""
    role, headers = with_a_role_key(case, fuzz_home["keys"])
    fuzzer.send(case, headers=headers, run=f"role key ({role})", forbid={401})


@pytest.fixture(scope="module")
def done_study(admin_schema: Any, fuzzer: Fuzzer, fuzz_home: dict) -> dict:
    """The seeded phantom series zipped and uploaded (its 202 checked against the schema), then
    analysed by the server: ``{"study_id", "status"}`` once done."""
    folder = Path(fuzz_home["seed"]["medical"]["ct_folder"])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*.dcm")):
            zf.write(path, path.relative_to(folder).as_posix())
    upload = admin_schema["/v1/medical/ct/studies"]["POST"]
    accepted = fuzzer.send(upload.Case(body={"study": buf.getvalue()}, media_type="multipart/form-data"),
                           headers=admin_headers(fuzz_home), run="done study", expect={202})
    study_id = accepted.json()["study_id"]
    deadline = time.monotonic() + DONE_SECONDS
    with httpx.Client(base_url=fuzzer.base_url, headers=admin_headers(fuzz_home), timeout=60) as client:
        while True:
            body = client.get(f"/v1/medical/ct/studies/{study_id}").json()
            if body["status"] in ("done", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert body["status"] == "done", f"the phantom study did not finish in {DONE_SECONDS:.0f} s: {body}"
    return {"study_id": study_id, "status": body}


def test_a_done_study_and_its_files_match_the_schema(admin_schema: Any, fuzzer: Fuzzer, fuzz_home: dict,
                                                     done_study: dict) -> None:
    """The 200 answers generated ids cannot reach: a done study's status with its findings, and each
    of its files; then generated file names on that study (404 or 422, never a file outside it)."""
    study_id, headers = done_study["study_id"], admin_headers(fuzz_home)
    status_op = admin_schema["/v1/medical/ct/studies/{study_id}"]["GET"]
    status = fuzzer.send(status_op.Case(path_parameters={"study_id": study_id}), headers=headers,
                         run="done study", expect={200}).json()
    assert status["findings"], "the phantom's nodule is found (test_service_ct checks where)"
    links = status["links"]
    urls = [links["seg"], links["sr"], *(u for maps in links["heatmaps"].values() for u in maps.values())]
    assert all(urls), links
    file_op = admin_schema["/v1/medical/ct/studies/{study_id}/files/{name}"]["GET"]
    for url in urls:
        fuzzer.send(file_op.Case(path_parameters={"study_id": study_id, "name": url.rsplit("/", 1)[1]}),
                    headers=headers, run="done study", expect={200})

    on_it = {"study_id": study_id}
    names = st.one_of(file_op.as_strategy(GenerationMode.POSITIVE, path_parameters=on_it),
                      file_op.as_strategy(GenerationMode.NEGATIVE, path_parameters=on_it))

    @given(case=names)
    @settings(max_examples=max(1, EXAMPLES // 2), **FUZZ_SETTINGS)
    def generated_names(case: Any) -> None:
        fuzzer.send(case, headers=headers, run="done study, generated names", expect={404, 422}, as_group=False)

    generated_names()


@pytest.mark.parametrize("path", sorted(ACCEPTED_SHAPES))
def test_generated_requests_that_reach_the_models_get_documented_answers(path: str, admin_schema: Any,
                                                                        fuzzer: Fuzzer, fuzz_home: dict) -> None:
    """Positive cases the schema alone rarely makes acceptable (a card-history model needs the card
    and terminal the schema calls optional; random bytes are never an image), completed so that
    they reach the batcher and the model: the answers must conform as well."""
    operation = admin_schema[path]["POST"]
    complete = ACCEPTED_SHAPES[path]
    headers = admin_headers(fuzz_home)

    @given(case=operation.as_strategy(GenerationMode.POSITIVE), data=st.data())
    @settings(max_examples=max(1, EXAMPLES // 2), **FUZZ_SETTINGS)
    def reaching_the_model(case: Any, data: Any) -> None:
        complete(case, data)
        fuzzer.send(case, headers=headers, run="reaching the model", as_group=False)

    reaching_the_model()


def test_the_fuzzing_sent_at_least_1000_requests_and_met_no_5xx(fuzzer: Fuzzer) -> None:
    print(fuzzer.summary())
    if fuzzer.failures:
        print(f"{len(fuzzer.failures)} distinct failures:\n{fuzzer.failure_report()}")
    assert fuzzer.total, "no request was sent: run the module whole (the fuzzing tests come before this one)"
    assert not fuzzer.server_errors(), f"5xx answers: {fuzzer.server_errors()}\n{fuzzer.failure_report()}"
    assert fuzzer.total >= MIN_REQUESTS, (
        f"{fuzzer.total} requests sent, fewer than {MIN_REQUESTS} (TRILLIUM_SCHEMA_EXAMPLES={EXAMPLES})")
