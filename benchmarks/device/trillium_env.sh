# Sourced by the device scripts: makes `trillium` importable on the lent GPU machine, which has
# torch but no package registry. $1: the carried folder of cp312 wheels the image lacks. The
# working tree's core/ and apps/* are linked under their import names (trillium.core, ...).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$1"/*.whl
mkdir -p /tmp/pkg/trillium
ln -sfn "$PWD/core" /tmp/pkg/trillium/core
for d in finance medical manufacturing; do ln -sfn "$PWD/apps/$d" "/tmp/pkg/trillium/$d"; done
# The core finds the verticals (CLI groups, demo parts, tables) through the trillium.verticals entry
# point, which an installed distribution declares: declare it here from pyproject.toml the same way.
mkdir -p /tmp/pkg/trillium_source-0.dist-info
printf 'Metadata-Version: 2.1\nName: trillium-source\nVersion: 0\n' > /tmp/pkg/trillium_source-0.dist-info/METADATA
python3 - "$PWD/pyproject.toml" > /tmp/pkg/trillium_source-0.dist-info/entry_points.txt <<'PY'
import sys, tomllib
groups = tomllib.load(open(sys.argv[1], "rb"))["project"]["entry-points"]
for group, entries in groups.items():
    print(f"[{group}]")
    for name, ref in entries.items():
        print(f"{name} = {ref}")
PY
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
