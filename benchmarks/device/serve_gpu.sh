#!/usr/bin/env bash
# The HTTP service with its models on the lent GPU machine: benchmarks/serve_gpu.py (trillium serve
# --device cuda, several workers, Redis state, wrk on loopback). Run from the repository root there,
# carrying .whl-serve/ (ignored through .git/info/exclude), which holds:
#   - the cp312 wheels the image lacks: fastapi, starlette, pydantic, pydantic-core, annotated-types,
#     annotated-doc, typing-inspection, typing-extensions, opentelemetry-api (fastapi imports it),
#     uvicorn, httptools, python-multipart, redis, hiredis, sqlalchemy, alembic, mako, lightgbm, pydicom
#     (the seed writes a DICOM phantom), defusedxml, and simple-icd-10-cm and hpo3 (the seed structures
#     notes, whose terminology index they build); the image has torch, numpy, pandas, pyarrow, scikit-learn,
#     scipy, onnx, onnxruntime, safetensors, opencv, pillow, typer, rich, click, anyio, h11, httpx,
#     uvloop and prometheus-client;
#   - bin/: Debian 12's wrk and redis-server (copied from /usr/bin here), and lib/: the shared
#     libraries `ldd` lists for them beyond the C and C++ runtimes and OpenSSL (libluajit, liblzf,
#     libjemalloc, libatomic, libsystemd and its libcap, libgcrypt, libgpg-error, liblz4, liblzma, libzstd); only
#     those the image lacks are put on the two programs' library path.
# Results: $OUT/serve_gpu.json, the run's log and the servers' logs in $OUT/logs. Extra arguments go
# to benchmarks/serve_gpu.py (e.g. --seconds 5 --skip cpu).
set -euo pipefail
CARRY=${CARRY:-.whl-serve}
OUT=${OUT:-/tmp/serve-gpu-out}
mkdir -p "$OUT"
source benchmarks/device/trillium_env.sh "$CARRY"

mkdir -p /tmp/serve-bin /tmp/serve-lib
for f in "$CARRY"/lib/*; do
  n=$(basename "$f")
  ldconfig -p | grep -qF "$n (" || ln -sf "$PWD/$f" "/tmp/serve-lib/$n"
done
for b in wrk redis-server; do
  printf '#!/bin/sh\nLD_LIBRARY_PATH=/tmp/serve-lib exec %s "$@"\n' "$PWD/$CARRY/bin/$b" > "/tmp/serve-bin/$b"
  chmod +x "/tmp/serve-bin/$b" "$CARRY/bin/$b"
done
export PATH=/tmp/serve-bin:$PATH
echo "libraries carried in: $(ls /tmp/serve-lib | tr '\n' ' ')"
wrk -v 2>&1 | head -1 || true
redis-server --version

redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --logfile /tmp/redis.log
trap 'python3 -c "import redis; redis.Redis().shutdown(nosave=True)" 2>/dev/null || true' EXIT
python3 - <<'PY'
import time, redis
for _ in range(50):
    try:
        redis.Redis().ping(); break
    except redis.ConnectionError:
        time.sleep(0.1)
print("redis", redis.Redis().info()["redis_version"], "on 127.0.0.1:6379")
PY
python3 -V
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, fastapi, uvicorn, sqlalchemy, lightgbm; print('torch', torch.__version__, torch.cuda.get_device_name(0), '| fastapi', fastapi.__version__, '| uvicorn', uvicorn.__version__)"
echo "cpus: $(nproc)"

set -o pipefail
python3 benchmarks/serve_gpu.py --json "$OUT/serve_gpu.json" --logs "$OUT/logs" "$@" 2>&1 | tee "$OUT/serve_gpu.log"
