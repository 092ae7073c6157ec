"""Database access: one engine per URL, sessions, and Alembic migrations.

The default store is an embedded SQLite file in ``TRILLIUM_HOME``; any SQLAlchemy URL works
through ``TRILLIUM_DB_URL``. ``connect()`` brings the schema to the latest migration the first
time a URL is used in a process, so users never run a separate setup step.
"""

from __future__ import annotations

import getpass
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from trillium.core.config import database_url
from trillium.core.db.models import (
    ApiKey,
    AuditEvent,
    Base,
    Feedback,
    Job,
    JobChunk,
    ModelAlias,
    ModelVersion,
    Prediction,
    User,
)
from trillium.core.errors import ConfigError, DatabaseError

__all__ = [
    "ApiKey",
    "AuditEvent",
    "Base",
    "Database",
    "DatabaseRef",
    "Feedback",
    "Job",
    "JobChunk",
    "ModelAlias",
    "ModelVersion",
    "Prediction",
    "User",
    "connect",
    "migrate",
]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

_lock = threading.Lock()
_databases: dict[tuple[str, str], Database] = {}


def _make_engine(url: str, connect_args: dict[str, Any] | None = None) -> Engine:
    kwargs: dict[str, Any] = {"future": True, "pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False, **(connect_args or {})}
    elif connect_args:
        kwargs["connect_args"] = connect_args
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite") and engine.url.database not in (None, "", ":memory:"):
        Path(engine.url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the dashboard read while a batch job writes; foreign keys are off by
            # default in SQLite and the schema relies on them.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Run Alembic migrations up to ``revision`` on ``engine``."""
    from alembic import command

    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(create_engine("sqlite://"))
    return ScriptDirectory.from_config(cfg).get_current_head()


class Database:
    """An engine, its session factory, and small helpers shared by every domain."""

    def __init__(self, url: str, connect_args: dict[str, Any] | None = None) -> None:
        self.url = url
        self.connect_args = dict(connect_args or {})  # kept so another process can connect the same way
        try:
            self.engine = _make_engine(url, connect_args)
        except (ArgumentError, NoSuchModuleError) as exc:
            raise ConfigError(
                f"cannot use database URL {url.split('@')[-1]!r} (from TRILLIUM_DB_URL or the caller): {exc}. "
                "Expected an SQLAlchemy URL such as postgresql+psycopg://user@host/db or sqlite:///path.db"
            ) from exc
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def upgrade(self) -> None:
        try:
            migrate(self.engine)
        except OperationalError as exc:
            raise DatabaseError(
                f"cannot reach or migrate the database at {self.safe_url}: {exc.orig}. "
                f"Check {'TRILLIUM_DB_URL'} or TRILLIUM_HOME."
            ) from exc

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on any error."""
        session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def tables(self) -> list[str]:
        return sorted(inspect(self.engine).get_table_names())

    def audit(self, action: str, target: str = "", actor: str | None = None, **details: Any) -> None:
        with self.session() as s:
            s.add(AuditEvent(actor=actor or _whoami(), action=action, target=target, details=details))

    def dispose(self) -> None:
        self.engine.dispose()


@dataclass(frozen=True)
class DatabaseRef:
    """How another process (a Ray worker) reaches the same database: URL and connection arguments.

    The URL travels as is, a password in it too, to the cluster's workers.
    """

    url: str
    connect_args: dict[str, Any] | None = None

    @classmethod
    def of(cls, db: Database) -> DatabaseRef:
        return cls(db.url, dict(db.connect_args) if db.connect_args else None)

    def connect(self) -> Database:
        """The worker's ``Database`` (not migrated: the driver already did it)."""
        return connect(self.url, upgrade=False, connect_args=self.connect_args)


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers (KeyError, OSError, ...)
        return "unknown"


def connect(url: str | None = None, *, upgrade: bool = True, connect_args: dict[str, Any] | None = None) -> Database:
    """The process-wide ``Database`` for ``url`` (default: ``TRILLIUM_DB_URL`` or SQLite)."""
    url = url or database_url()
    key = (url, repr(sorted((connect_args or {}).items())))
    with _lock:
        db = _databases.get(key)
        if db is None:
            db = Database(url, connect_args)
            if upgrade:
                db.upgrade()
            _databases[key] = db
        return db


def reset_connections() -> None:
    """Forget cached engines (tests switch TRILLIUM_HOME / TRILLIUM_DB_URL between cases)."""
    with _lock:
        for db in _databases.values():
            db.dispose()
        _databases.clear()
