"""Lazy public APIs for package roots: ``from trillium.<vertical> import Predictor`` without the cost.

A package root lists its public names in a static ``__all__`` (for the docs, IDEs and
``from x import *``) and maps each name to the submodule that defines it. Importing the root
imports none of them: the submodule is imported the first time one of its names is looked up
(PEP 562 ``__getattr__``), and the object is then cached in the root's namespace. So
``import trillium.core`` stays as cheap as before (no torch, no SQLAlchemy), and a root that
names a vertical's predictor cannot form an import cycle with the modules that import the root.
"""

from __future__ import annotations

import importlib
import sys

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: importing typing would double this import's cost
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of package ``package`` exporting ``{module: names}``.

    Module paths are absolute (``"trillium.<vertical>.pipeline"``) so that a root can export names
    of modules outside its own folder. A name listed twice is an error at import time, not a
    silent choice of one of the modules.
    """
    where: dict[str, str] = {}
    for module, names in exports.items():
        for name in names:
            if name in where:
                raise ValueError(f"{package}: {name!r} is exported from both {where[name]} and {module}")
            where[name] = module

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__
