# Sourced by the device scripts: makes `trillium` importable on the lent GPU machine, which has
# torch but no package registry. $1: the carried folder of cp312 wheels the image lacks. The
# working tree's core/ and apps/* are linked under their import names (trillium.core, ...).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$1"/*.whl
mkdir -p /tmp/pkg/trillium
ln -sfn "$PWD/core" /tmp/pkg/trillium/core
for d in finance medical manufacturing; do ln -sfn "$PWD/apps/$d" "/tmp/pkg/trillium/$d"; done
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
