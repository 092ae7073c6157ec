"""The package roots' public APIs: every name in ``__all__`` resolves, to the object its module defines.

Each root lists its names three times: the static ``__all__`` (docs, ``import *``), the
``TYPE_CHECKING`` imports (IDEs and type checkers) and the runtime map that ``lazy_exports``
imports from on first use. These tests hold the three together, check that a root names no
submodule (a submodule imported first would shadow the name), and that importing a root stays
light: the names are looked up lazily, never imported with the package.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

ROOTS = [
    "trillium.core",
    "trillium.finance",
    "trillium.manufacturing",
    "trillium.medical",
    "trillium.medical.imaging",
    "trillium.medical.records",
]


def _type_checking_imports(package: str) -> dict[str, str]:
    """{name: module} of the ``if TYPE_CHECKING:`` imports in the package's ``__init__``."""
    tree = ast.parse(Path(importlib.import_module(package).__file__).read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module, ast.dump(stmt)
                for alias in stmt.names:
                    out[alias.asname or alias.name] = stmt.module
    return out


@pytest.mark.parametrize("package", ROOTS)
def test_every_exported_name_is_its_defining_modules_object(package: str) -> None:
    pkg = importlib.import_module(package)
    names = pkg.__all__
    assert isinstance(names, list) and len(names) == len(set(names)), "__all__ lists a name twice"
    declared = _type_checking_imports(package)
    assert set(declared) == set(names), "the TYPE_CHECKING imports and __all__ disagree"
    for name in names:
        obj = getattr(pkg, name)
        assert obj is getattr(importlib.import_module(declared[name]), name), f"{package}.{name}"
        if inspect.isclass(obj) or inspect.isfunction(obj):  # where it is defined, not only re-exported
            assert getattr(importlib.import_module(obj.__module__), obj.__name__) is obj, f"{package}.{name}"
        assert importlib.util.find_spec(f"{package}.{name}") is None, f"{package}.{name} is also a submodule"
    assert set(names) <= set(dir(pkg))
    with pytest.raises(AttributeError, match="no_such_name"):
        pkg.no_such_name  # noqa: B018


@pytest.mark.parametrize("package", ROOTS)
def test_star_import_gives_all(package: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {package} import *", namespace)  # noqa: S102
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(importlib.import_module(package).__all__)


def test_headline_imports() -> None:
    from trillium.core import DynamicBatcher, InferenceRuntime, ModelRegistry, Predictor, connect, run_job
    from trillium.core.batching import DynamicBatcher as defined_batcher
    from trillium.finance import FraudScorer
    from trillium.finance.pipeline import FraudScorer as defined_scorer
    from trillium.manufacturing import Inspector
    from trillium.manufacturing.pipeline import Inspector as defined_inspector
    from trillium.medical import RecordStructurer, StudyAnalyzer
    from trillium.medical.imaging.analyzer import StudyAnalyzer as defined_analyzer
    from trillium.medical.records.structurer import RecordStructurer as defined_structurer

    assert FraudScorer is defined_scorer and Inspector is defined_inspector
    assert StudyAnalyzer is defined_analyzer and RecordStructurer is defined_structurer
    assert DynamicBatcher is defined_batcher
    assert all(issubclass(p, Predictor) for p in (FraudScorer, Inspector, StudyAnalyzer, RecordStructurer))
    assert callable(connect) and callable(run_job) and ModelRegistry and InferenceRuntime


def test_roots_import_nothing_heavy() -> None:
    """A fresh interpreter: importing every root loads none of the libraries the names need."""
    code = (
        "import sys\n"
        f"for m in {ROOTS!r}: __import__(m)\n"
        "heavy = [m for m in ('torch', 'numpy', 'pandas', 'sqlalchemy', 'sklearn', 'pydicom', 'cv2') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"
