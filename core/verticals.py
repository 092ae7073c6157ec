"""How the core finds the verticals without importing them: the ``trillium.verticals`` entry point.

The core never names a vertical (a grep of ``core/`` for a vertical's import name finds nothing).
Each vertical declares one :class:`Vertical` in its package and registers it in ``pyproject.toml``::

    [project.entry-points."trillium.verticals"]
    <name> = "trillium.<name>.vertical:VERTICAL"

and the core's CLI, demo, database metadata and service take what the entry points list. A
fourth vertical is a folder and an entry, with nothing changed in core. References inside a
``Vertical`` are ``"module:attribute"`` strings, loaded only when used, so listing the
verticals imports nothing heavy.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from trillium.core.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "Vertical", "load_ref", "load_tables", "verticals"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "trillium.verticals"


@dataclass(frozen=True)
class Vertical:
    """What a vertical contributes to the core's commands and database.

    - ``cli``: its Typer group (``trillium <name> ...``);
    - ``demo``: a function ``(console) -> summary`` that ``trillium demo`` runs after the core part;
    - ``tables``: the module defining its ORM tables on ``trillium.core.db.models.Base``, imported
      before the schema is compared or migrated (one Alembic history for every table);
    - ``service``: a function ``(ServiceContext) -> fastapi.APIRouter`` whose routes the HTTP
      service mounts under ``/v1/<name>`` (``trillium.core.service``);
    - ``service_demo``: a function ``(httpx.Client) -> str`` making one authorised call to its
      routes (the demo's last step, ``trillium.core.service.demo``);
    - ``roles``: the roles it defines, ``(role, scopes)`` pairs; its scopes are ``<name>:read`` and
      ``<name>:write`` (``trillium.core.access``);
    - ``monitoring``: a function ``(model_name, db=None) -> DataFrame`` of the model's realised
      performance from labels, by day (``trillium.core.monitoring.report``); empty for models it
      does not know;
    - ``order``: where it runs in the demo and appears in help (lower first).
    """

    name: str
    title: str
    cli: str | None = None
    demo: str | None = None
    tables: str | None = None
    service: str | None = None
    service_demo: str | None = None
    roles: tuple[tuple[str, tuple[str, ...]], ...] = ()
    monitoring: str | None = None
    order: int = 100


def load_ref(ref: str) -> Any:
    """The object a ``"package.module:attribute"`` reference names."""
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr) if attr else module
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load {ref!r} ({type(exc).__name__}: {exc}); is the package installed?") from exc


@cache
def verticals() -> tuple[Vertical, ...]:
    """Every installed vertical, in ``order``; a broken entry is an error naming it."""
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            vertical = ep.load()
        except Exception as exc:
            raise ConfigError(f"entry point {ep.name} = {ep.value!r} of group {ENTRY_POINT_GROUP} cannot be "
                              f"loaded ({type(exc).__name__}: {exc})") from exc
        if not isinstance(vertical, Vertical):
            raise ConfigError(f"entry point {ep.name} = {ep.value!r} is a {type(vertical).__name__}, not a Vertical")
        found.append(vertical)
    return tuple(sorted(found, key=lambda v: (v.order, v.name)))


def load_tables() -> None:
    """Import every vertical's table module, so ``Base.metadata`` holds the whole schema."""
    for vertical in verticals():
        if vertical.tables:
            load_ref(vertical.tables)
