"""Where Trillium keeps its state: the home directory and the database URL.

Both come from the environment so that a batch job, a dashboard and a test can point at
different stores without code changes: ``TRILLIUM_HOME`` (default ``./.trillium``) holds the
embedded SQLite file, the model registry and job files; ``TRILLIUM_DB_URL`` overrides the
database with any SQLAlchemy URL (PostgreSQL for a team).
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "TRILLIUM_HOME"
DB_URL_ENV = "TRILLIUM_DB_URL"


def home_dir() -> Path:
    """The data directory, created on first use."""
    path = Path(os.environ.get(HOME_ENV, ".trillium")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def registry_dir() -> Path:
    path = home_dir() / "registry"
    path.mkdir(parents=True, exist_ok=True)
    return path


def jobs_dir() -> Path:
    path = home_dir() / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url() -> str:
    """``TRILLIUM_DB_URL`` if set, else the SQLite file ``$TRILLIUM_HOME/trillium.db``."""
    url = os.environ.get(DB_URL_ENV, "").strip()
    if url:
        return url
    return f"sqlite:///{home_dir() / 'trillium.db'}"
