#!/usr/bin/env bash
# The Ray engine's scaling curve on the lent GPU machine's 16 CPU cores (no package registry there).
# Carried in .whl/ (ignored): the cp312 wheels the image lacks (sqlalchemy, alembic, mako, lightgbm,
# captum, jsonschema, jsonschema-specifications, referencing, rpds-py) and ray 2.60.0 for cp312 as a
# tar.xz without its Java jars and dashboard web build (the wheel is 79 MB, over the carry limit;
# neither part is used by Ray Data in Python). The handbook file does not travel: the benchmark
# simulates the same-size dataset with the handbook's generator (seed 0). CPU workers only
# (CUDA_VISIBLE_DEVICES empty): this is the CPU scaling of the batch engine, not a GPU run.
set -euo pipefail
source benchmarks/device/trillium_env.sh .whl
tar xJf .whl/ray-*-cp312-stripped.tar.xz -C /tmp/site
export PATH=/tmp/site/bin:$PATH CUDA_VISIBLE_DEVICES=
python3 -c "import ray, ray.data, sqlalchemy, lightgbm; print('ray', ray.__version__)"
python3 benchmarks/ray_engine.py --json "${OUT:-/tmp}/ray_engine_16core.json" --cpus 16 --workers 16 \
    --workers-curve 1,2,4,8,16 --chunk-rows "${CHUNK_ROWS:-50000}"
