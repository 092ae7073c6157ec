"""Shared fixtures: an isolated TRILLIUM_HOME per test and a database on SQLite *and* PostgreSQL.

PostgreSQL is the real server on 127.0.0.1:5432 (database ``test``, trust auth). Each test
gets its own schema, dropped afterwards, so runs never see each other's rows. When the server
is unreachable the PostgreSQL cases are skipped with the reason, unless
``TRILLIUM_REQUIRE_POSTGRES=1`` (set by ``make test`` and CI), where they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from trillium.core import db as dbmod

PG_URL = os.environ.get("TRILLIUM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("TRILLIUM_REQUIRE_POSTGRES") == "1"
# The public data sets beside the checkout (../shared/data; TRILLIUM_SHARED_DATA points elsewhere).
SHARED_DATA = Path(os.environ.get("TRILLIUM_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
# ``make test`` sets it: a test whose published oracle (a file of ../shared/data or an extra of
# ``[dev]``) is missing fails instead of skipping, as the PostgreSQL, browser and Ray cases do.
REQUIRE_DATA = os.environ.get("TRILLIUM_REQUIRE_DATA") == "1"


def require_shared(path: Path, what: str) -> Path:
    """``path`` when it exists; otherwise skip with the reason, or fail under TRILLIUM_REQUIRE_DATA=1."""
    if path.exists():
        return path
    reason = f"{what} not found at {path} (see ../shared/data/README.md; TRILLIUM_SHARED_DATA overrides the folder)"
    if REQUIRE_DATA:
        pytest.fail(reason)
    pytest.skip(reason)


def require_module(name: str, extra: str) -> object:
    """Import ``name``; when it is missing skip with the extra to install, or fail under TRILLIUM_REQUIRE_DATA=1."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        reason = f"{name} is not installed ({exc}): pip install 'trillium[{extra}]'"
        if REQUIRE_DATA:
            pytest.fail(reason)
        pytest.skip(reason, allow_module_level=True)


def _pg_available() -> str | None:
    try:
        eng = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(text("select 1"))
        eng.dispose()
        return None
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL at {PG_URL} unreachable: {exc.__class__.__name__}: {exc}"


@pytest.fixture(autouse=True)
def trillium_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test writes under its own TRILLIUM_HOME and SQLite file."""
    home = tmp_path / "home"
    monkeypatch.setenv("TRILLIUM_HOME", str(home))
    monkeypatch.delenv("TRILLIUM_DB_URL", raising=False)
    dbmod.reset_connections()
    yield home
    dbmod.reset_connections()


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, dict]]:
    """A fresh PostgreSQL schema: (url, connect_args) that put it first on the search path."""
    reason = _pg_available()
    if reason:
        if REQUIRE_PG:
            pytest.fail(reason)
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield PG_URL, {"options": f"-csearch_path={schema}"}
    finally:
        dbmod.reset_connections()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, trillium_home: Path) -> Iterator[dbmod.Database]:
    """A migrated ``Database`` on each backend (tests using it run twice)."""
    if request.param == "sqlite":
        yield dbmod.connect(f"sqlite:///{trillium_home / 'test.db'}")
    else:
        url, args = request.getfixturevalue("pg_schema")
        yield dbmod.connect(url, connect_args=args)


@pytest.fixture(scope="module")
def ray_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A local Ray cluster of 2 CPUs for the module, with the module's own classes pickled by
    value (workers cannot import test files). Without Ray the tests skip with the extra to
    install, unless ``TRILLIUM_REQUIRE_RAY=1`` (set by ``make test``), where they fail."""
    import logging
    import sys

    try:
        import ray
    except ImportError:
        if os.environ.get("TRILLIUM_REQUIRE_RAY") == "1":
            raise
        pytest.skip("the ray extra is not installed: pip install 'trillium[ray]'")
    module = sys.modules[request.module.__name__]
    ray.cloudpickle.register_pickle_by_value(module)
    home = tmp_path_factory.mktemp("ray-home")  # workers never rely on it: every location travels with the job
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": {"TRILLIUM_HOME": str(home)}})
    yield ray
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(module)
