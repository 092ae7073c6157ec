"""MkDocs hook: let mkdocstrings (griffe, static analysis) find the ``trillium.*`` modules.

The import names are not folder names: ``pyproject.toml`` maps ``trillium.core`` to ``core/``,
``trillium.finance`` to ``apps/finance/`` and so on (``[tool.setuptools] package-dir``), and
``trillium`` itself is an implicit namespace package. Griffe looks for a ``trillium/`` folder on
its search path, which the source tree does not have, and its reading of setuptools' editable
finder assumes that a folder is named like its package. So before the build this hook lays a
temporary ``trillium/`` folder of symbolic links, one per mapped import name, read from
``pyproject.toml`` (a new vertical appears without touching this file), and puts it first on
``sys.path``, which the Python handler copies into its search paths when it starts.
Nothing is imported: the API pages come from the source text alone.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

from mkdocs.plugins import event_priority

_farm: Path | None = None


def _lay_farm(root: Path) -> Path:
    mapping = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"]
    farm = Path(tempfile.mkdtemp(prefix="trillium-docs-"))
    for name, folder in mapping.items():
        parts = name.split(".")
        if parts[0] != "trillium" or len(parts) != 2:
            continue
        (farm / "trillium").mkdir(exist_ok=True)
        (farm / "trillium" / parts[1]).symlink_to((root / folder).resolve(), target_is_directory=True)
    return farm


@event_priority(100)  # before mkdocstrings starts its handler
def on_config(config):
    global _farm
    if _farm is None:
        _farm = _lay_farm(Path(config.config_file_path).parent)
    if str(_farm) not in sys.path:
        sys.path.insert(0, str(_farm))
    return config


def on_shutdown():
    global _farm
    if _farm is not None:
        if str(_farm) in sys.path:
            sys.path.remove(str(_farm))
        shutil.rmtree(_farm, ignore_errors=True)
        _farm = None
