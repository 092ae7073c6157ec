"""A built wheel carries every import name and the migrations, not just the editable checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import sys
# Drop the editable install's finder so that only the wheel's files can be imported.
sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
import trillium.core.db as d, trillium.core.jobs, trillium.core.cli
import trillium.finance.cli, trillium.medical.cli, trillium.manufacturing.cli, trillium.dashboards
assert d.__file__.startswith(sys.argv[1]), d.__file__
db = d.connect("sqlite://")
assert "model_versions" in db.tables() and d.current_revision(db.engine) == d.head_revision()
print("ok")
"""


def test_wheel_installs_and_imports(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
                   check=True, timeout=300)
    wheel = next(wheels.glob("trillium-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "trillium/core/db/migrations/versions/0001_initial.py" in names
    assert "trillium/dashboards/Home.py" in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    res = subprocess.run([sys.executable, "-c", CHECK, str(target)], env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
