"""Set-up for the fuzz tests.

- Their shared strategies are imported as ``tests.fuzz.strategies`` (also used by
  ``benchmarks/fuzz_adapters.py``); ``python -m pytest`` puts the repository root on ``sys.path``,
  a bare ``pytest`` does not, so it is added here.
- Hypothesis keeps caches (and, unless ``database=None``, an example database) under
  ``./.hypothesis``; they go to a temporary folder instead, removed at exit, so a test run
  writes nothing into the checkout.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

from hypothesis.configuration import set_hypothesis_home_dir

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

_HOME = tempfile.mkdtemp(prefix="trillium-hypothesis-")
set_hypothesis_home_dir(_HOME)
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
