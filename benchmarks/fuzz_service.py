"""Fuzzing the HTTP service from its own OpenAPI schema at scale: Schemathesis cases over HTTP.

    .venv/bin/python benchmarks/fuzz_service.py --json benchmarks/results/fuzz_service.json

The same fuzzing as ``tests/service/test_service_schema.py`` (the helpers of
``tests/service/schema_fuzz.py``: the schema as the server serves it, the same checks, key
variants and completed cases) with more cases: ``--examples`` fuzzing cases per operation with
the admin key (default 300, about 5,000 requests in all), and for every operation Schemathesis's
examples and coverage phases as well (its own test builder, the one ``@schema.parametrize()``
uses). The runs:

- ``admin``: every operation, positive and negative data; every response through the schema checks;
- ``no valid key (...)``: no key, an unknown, a malformed or a revoked one (``--examples`` / 4 per
  operation): a ``/v1`` route must answer 401;
- ``role key (...)``: the key of one field's role or the read-only viewer (``--examples`` / 4): 403
  outside its scopes, never 401;
- ``reaching the model``: positive transactions and uploads completed so they reach the model
  (``--examples`` / 2);
- ``done study``: the seeded phantom CT study uploaded and analysed, its status and files fetched,
  then generated file names on it (``--examples`` / 2).

Unlike the test, a failing case does not stop its operation: every case is sent, failures are
counted by signature (run, operation, check, status) and the first reproduction of each is kept
(the request as sent with the key redacted, the response's status and body, a curl command).

The server is started as the test harness starts it (``tests/service/conftest.py``): a home seeded
by ``tests/e2e/seed.py`` in a temporary folder (or in ``--home``, kept and reused by later runs),
keys made with ``trillium keys create`` (one per role, and one revoked with ``trillium keys revoke``),
``trillium serve`` with ``--workers`` workers and its finance state in Redis under a prefix of its own.
The load generator and the server share the machine's cores.

The JSON report: the settings, the requests per run and operation, the status counts, the failures,
the seconds (wall, in requests) and the requests per second.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # ``tests`` is a namespace package under the repository root


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_keys(home: Path) -> dict[str, str]:
    """One key per role of the test harness, and an admin key revoked at once, with the CLI."""
    from tests.service.conftest import ROLES, run_cli

    keys = {}
    stamp = time.strftime("%Y%m%d%H%M%S")
    for name, role in {**ROLES, "revoked": "admin"}.items():
        path = home / "keys" / f"fuzz-{name}.key"
        run_cli(home, "keys", "create", "--owner", f"fuzz-{name}-{stamp}", "--role", role, "--key-file", str(path))
        keys[name] = path.read_text().strip()
    run_cli(home, "keys", "revoke", keys["revoked"].split("_")[1])
    return keys


def prepare_home(home: Path) -> dict:
    """``home`` seeded by ``tests/e2e/seed.py`` (its summary kept in ``seed.json``; a home that has one
    is reused as it is), with fresh keys."""
    summary = home / "seed.json"
    if summary.exists():
        log(f"using the seeded home {home}")
        seed = json.loads(summary.read_text())
    else:
        log(f"seeding {home} (tests/e2e/seed.py)")
        from tests.service.conftest import SEED

        home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TRILLIUM_HOME": str(home), "OMP_NUM_THREADS": "1"}
        env.pop("TRILLIUM_DB_URL", None)
        proc = subprocess.run([sys.executable, str(SEED), str(home)], env=env, capture_output=True, text=True,
                              timeout=900, cwd=home, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"seeding {home} failed:\n{proc.stderr[-3000:]}")
        seed = json.loads(proc.stdout.strip().splitlines()[-1])
        summary.write_text(json.dumps(seed))
    return {"home": home, "seed": seed, "keys": make_keys(home)}


def fuzz_operations(schema: Any, fuzzer: Any, *, run: str, examples: int, headers_for: Any,
                    expect_for: Any = None, forbid: tuple[int, ...] = ()) -> None:
    """Every operation of ``schema``, through Schemathesis's test builder (examples, coverage and
    fuzzing phases; positive and negative data), in collect mode (no case stops the run)."""
    import hypothesis
    from schemathesis.generation.hypothesis.builder import HypothesisTestConfig, HypothesisTestMode, create_test

    from tests.service.schema_fuzz import HEALTH_CHECKS

    modes = [HypothesisTestMode.EXAMPLES, HypothesisTestMode.COVERAGE, HypothesisTestMode.FUZZING]
    explicit = hypothesis.settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                                   suppress_health_check=HEALTH_CHECKS, print_blob=False)
    for result in schema.get_all_operations():
        operation = result.ok()
        t0 = time.perf_counter()
        before = fuzzer.total

        def send(case: Any) -> None:
            label, headers = headers_for(case)
            expect = expect_for(case) if expect_for else None
            with contextlib.suppress(requests.RequestException):  # recorded by send (no response); go on
                fuzzer.send(case, headers=headers, run=f"{run} ({label})" if label else run, expect=expect,
                            forbid=forbid, raise_failures=False)

        test = create_test(operation=operation, test_func=send, config=HypothesisTestConfig(
            project=schema.config, modes=modes, explicit_settings=explicit,
            settings=schema.config.get_hypothesis_settings(operation=operation, phase="fuzzing")))
        test()
        log(f"  {run}: {operation.method.upper()} {operation.path}: {fuzzer.total - before} requests "
            f"in {time.perf_counter() - t0:.1f} s")


def given_cases(strategy: Any, examples: int, body: Any) -> None:
    import hypothesis

    from tests.service.schema_fuzz import HEALTH_CHECKS

    @hypothesis.given(case=strategy, data=hypothesis.strategies.data())
    @hypothesis.settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                         suppress_health_check=HEALTH_CHECKS, print_blob=False)
    def run(case: Any, data: Any) -> None:
        with contextlib.suppress(requests.RequestException):  # recorded by the fuzzer (no response); go on
            body(case, data)

    run()


def done_study(schema: Any, fuzzer: Any, home: dict, examples: int) -> None:
    import httpx
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    from tests.service.schema_fuzz import API_KEY_HEADER

    headers = {API_KEY_HEADER: home["keys"]["admin"]}
    folder = Path(home["seed"]["medical"]["ct_folder"])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*.dcm")):
            zf.write(path, path.relative_to(folder).as_posix())
    upload = schema["/v1/medical/ct/studies"]["POST"]
    accepted = fuzzer.send(upload.Case(body={"study": buf.getvalue()}, media_type="multipart/form-data"),
                           headers=headers, run="done study", expect={202}, raise_failures=False)
    if accepted.status_code != 202:
        log(f"  the phantom study was refused ({accepted.status_code}): no done study to fetch")
        return
    study_id = accepted.json()["study_id"]
    deadline = time.monotonic() + 300
    with httpx.Client(base_url=fuzzer.base_url, headers=headers, timeout=60) as client:
        while client.get(f"/v1/medical/ct/studies/{study_id}").json()["status"] not in ("done", "failed"):
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
    status_op = schema["/v1/medical/ct/studies/{study_id}"]["GET"]
    body = fuzzer.send(status_op.Case(path_parameters={"study_id": study_id}), headers=headers, run="done study",
                       expect={200}, raise_failures=False).json()
    if body.get("status") != "done":
        log(f"  the phantom study did not finish: {body}")
        return
    links = body["links"]
    file_op = schema["/v1/medical/ct/studies/{study_id}/files/{name}"]["GET"]
    for url in [links["seg"], links["sr"], *(u for m in links["heatmaps"].values() for u in m.values())]:
        if url:
            fuzzer.send(file_op.Case(path_parameters={"study_id": study_id, "name": url.rsplit("/", 1)[1]}),
                        headers=headers, run="done study", expect={200}, raise_failures=False)
    on_it = {"study_id": study_id}
    names = st.one_of(file_op.as_strategy(GenerationMode.POSITIVE, path_parameters=on_it),
                      file_op.as_strategy(GenerationMode.NEGATIVE, path_parameters=on_it))
    given_cases(names, examples, lambda case, _: fuzzer.send(
        case, headers=headers, run="done study, generated names", expect={404, 422}, raise_failures=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=300,
                    help="fuzzing cases per operation with the admin key (the other runs scale from it)")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "fuzz_service.json")
    ap.add_argument("--home", type=Path, default=None,
                    help="a TRILLIUM_HOME to seed and keep (one seeded by an earlier run is reused as it is, "
                         "with what earlier runs stored); default: a temporary one")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    import hypothesis
    import redis
    import schemathesis
    from schemathesis import GenerationMode

    from tests.service.conftest import REDIS_URL, ServiceProcess
    from tests.service.schema_fuzz import (
        ACCEPTED_SHAPES,
        API_KEY_HEADER,
        Fuzzer,
        expected_without_a_key,
        load_schema,
        with_a_role_key,
        without_a_valid_key,
    )

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        raise SystemExit(f"the server's workers share their finance state in Redis at {REDIS_URL}: {exc}") from None

    t_start = time.perf_counter()
    tmp = None
    if args.home is None:
        tmp = tempfile.TemporaryDirectory(prefix="trillium-fuzz-service-")
        target = Path(tmp.name) / "home"
    else:
        target = args.home.resolve()
    t0 = time.perf_counter()
    home = prepare_home(target)
    seed_s = time.perf_counter() - t0

    log(f"starting trillium serve ({args.workers} workers)")
    t0 = time.perf_counter()
    server = ServiceProcess(target, workers=args.workers).wait_ready()
    start_s = time.perf_counter() - t0
    fuzzer = Fuzzer(server.url)
    n = args.examples
    admin = {API_KEY_HEADER: home["keys"]["admin"]}
    t_fuzz = time.perf_counter()
    try:
        schema = load_schema(server.url, examples=n)
        light = load_schema(server.url, examples=max(1, n // 4))
        log(f"admin key, {n} fuzzing cases per operation")
        fuzz_operations(schema, fuzzer, run="admin", examples=n, headers_for=lambda case: ("", admin))
        log(f"no valid key, {max(1, n // 4)} per operation")
        fuzz_operations(light, fuzzer, run="no valid key", examples=max(1, n // 4),
                        headers_for=lambda case: without_a_valid_key(case, home["keys"]["revoked"]),
                        expect_for=expected_without_a_key)
        log(f"role keys, {max(1, n // 4)} per operation")
        fuzz_operations(light, fuzzer, run="role key", examples=max(1, n // 4),
                        headers_for=lambda case: with_a_role_key(case, home["keys"]), forbid=(401,))
        for path, complete in sorted(ACCEPTED_SHAPES.items()):
            log(f"reaching the model: {path}, {max(1, n // 2)} cases")

            def reach(case: Any, data: Any, complete: Any = complete) -> None:
                complete(case, data)
                fuzzer.send(case, headers=admin, run="reaching the model", raise_failures=False)

            given_cases(schema[path]["POST"].as_strategy(GenerationMode.POSITIVE), max(1, n // 2), reach)
        log("done study: upload, analysis, status and files, generated names")
        done_study(schema, fuzzer, home, max(1, n // 2))
    finally:
        fuzz_s = time.perf_counter() - t_fuzz
        code = server.stop()
        server_log = server.log()
        fuzzer.session.close()
        if tmp is not None:
            tmp.cleanup()

    report = {
        "what": "requests generated from the service's OpenAPI schema (Schemathesis), over HTTP to trillium serve",
        "settings": {"examples_per_operation": n, "no_valid_key_and_role_examples": max(1, n // 4),
                     "reaching_the_model_and_done_study_examples": max(1, n // 2), "workers": args.workers,
                     "phases": ["examples", "coverage", "fuzzing"], "modes": ["positive", "negative"],
                     "deterministic": True},
        **fuzzer.report(),
        "server_errors": fuzzer.server_errors(),
        "server_exit_code": code,
        "server_log_internal_errors": server_log.count(" failed (ref "),
        "seconds": {"seed": round(seed_s, 1), "server_start": round(start_s, 1), "fuzzing": round(fuzz_s, 1),
                    "total": round(time.perf_counter() - t_start, 1)},
        "requests_per_second": round(fuzzer.total / fuzz_s, 1) if fuzz_s else None,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "schemathesis": schemathesis.__version__,
                    "hypothesis": hypothesis.__version__,
                    "note": "the load generator and the server share the machine's cores"},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    log(f"{fuzzer.total:,} requests in {fuzz_s:.1f} s ({report['requests_per_second']}/s), "
        f"{len(fuzzer.failures)} distinct failures, {sum(fuzzer.server_errors().values())} 5xx -> {args.json}")


if __name__ == "__main__":
    main()
