#!/usr/bin/env bash
# Issue 22: the chest-CT study on the lent GPU machine (H100), stage by stage, main's SciPy path
# against the torch path in the same run, and torch-on-CUDA candidates against SciPy's.
# Run from the repository root there, carrying (all ignored under .trillium/):
#   - .trillium/whl-ct: cp312 wheels the image lacks (pydicom, pyjpegls, sqlalchemy, greenlet, alembic, mako,
#     lightgbm (4.7.0 comes only as a manylinux_2_28 wheel: --platform manylinux_2_28_x86_64), defusedxml;
#     `pip download ... --no-deps --only-binary :all: --python-version 3.12 --platform manylinux2014_x86_64`);
#     the image has torch, numpy, scipy, typer, markupsafe;
#   - .trillium/trillium.db and .trillium/registry: the registered chest-CT model. Or train it there first
#     (3 min 16 s on the H100 host's 16 cores, against about 15 min here): source trillium_env.sh, then
#     python3 -c 'from trillium.core.cli import app; app()' medical train, with TRILLIUM_HOME=$PWD/.trillium;
#   - .trillium/ct-real: optional copy of a real series (Lung-PET-CT-Dx A0002, 31 MB) for the equality check.
# The 512 x 512 x 300 phantom study is written on the device (not carried). Results in $OUT:
# medical_imaging_gpu.json (stages, ratios, studies in flight, 600-slice memory peak) and
# medical_imaging_equality_gpu.json. SMOKE=1 runs a small study only (a check of the set-up); QUICK=1
# the torch path alone on the 300-slice study (for a short device lease); BEFORE=1 the last release's
# torch path against this one, 4 studies in flight (results/medical_imaging_gpu_h100_fast.json).
set -euo pipefail
CARRY=${CARRY:-.trillium/whl-ct}
OUT=${OUT:-/tmp/ct-gpu-out}
mkdir -p "$OUT"
source benchmarks/device/trillium_env.sh "$CARRY"
export TRILLIUM_HOME=$PWD/.trillium
python3 -V
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, scipy, pydicom, lightgbm, sqlalchemy; print('torch', torch.__version__, torch.cuda.get_device_name(0), '| scipy', scipy.__version__, '| pydicom', pydicom.__version__)"
echo "cpus: $(nproc)"
THREADS=$(nproc)
python3 benchmarks/medical_imaging_equality.py --json "$OUT/medical_imaging_equality_gpu.json" \
  --data .trillium/ct-real --device cuda --threads "$THREADS" 2>&1 | tail -5
if [ "${SMOKE:-0}" = 1 ]; then
  python3 benchmarks/medical_imaging.py --json "$OUT/medical_imaging_gpu_smoke.json" --work /tmp/ct-smoke \
    --slices 60 --size 256 --repeats 2 --threads "$THREADS" --in-flight 2 2>&1 | tail -20
  exit 0
fi
if [ "${QUICK:-0}" = 1 ]; then  # a short lease: the torch path alone, no studies in flight, no 600-slice run
  python3 benchmarks/medical_imaging.py --json "$OUT/medical_imaging_gpu_quick.json" --work /tmp/ct512 \
    --paths torch --repeats 3 --threads "$THREADS" 2>&1 | tee "$OUT/medical_imaging_gpu_quick.log"
  exit 0
fi
if [ "${BEFORE:-0}" = 1 ]; then
  python3 benchmarks/medical_imaging.py --json "$OUT/medical_imaging_gpu_fast.json" --work /tmp/ct512 \
    --paths before-torch,torch --repeats 3 --threads "$THREADS" --in-flight 4 2>&1 | tee "$OUT/medical_imaging_gpu_fast.log"
  exit 0
fi
python3 benchmarks/medical_imaging.py --json "$OUT/medical_imaging_gpu.json" --work /tmp/ct512 \
  --repeats 2 --threads "$THREADS" --in-flight "${IN_FLIGHT:-4}" --big-slices 600 "$@" 2>&1 | tee "$OUT/medical_imaging_gpu.log"
