#!/usr/bin/env bash
# Wider segmenters on Magnetic Tile, trained on the lent GPU machine with the product CLI.
# Carried (ignored folders): .whlm/ (cp312 wheels of sqlalchemy, alembic, mako: the image lacks them)
# and .mt/magnetic-tile (a copy of ../shared/data/manufacturing/magnetic-tile).
# Same settings as the selected C320 run (benchmarks/results/manufacturing_selection_magnetic_tile.json)
# but --width; the widths train side by side, 8 CPU threads each (the synthetic defects are drawn on
# the CPU). Weights come back in $OUT; register them here with `trillium manufacturing adopt`.
set -euo pipefail
source benchmarks/device/trillium_env.sh .whlm
export OMP_NUM_THREADS=8
for w in ${WIDTHS:-32 48}; do
  TRILLIUM_HOME=/tmp/home-w$w python3 -m trillium.core.cli manufacturing train --data .mt/magnetic-tile \
      --size 320 --steps ${STEPS:-6000} --batch-size 32 --width $w --flips 2 --device cuda --shots 20 \
      --no-autotune --json "$OUT/train_w$w.json" > "$OUT/train_w$w.log" 2>&1 &
done
wait
for w in ${WIDTHS:-32 48}; do cp /tmp/home-w$w/registry/inspector/v1/weights.safetensors "$OUT/w$w.safetensors"; done
ls -la "$OUT"; tail -3 "$OUT"/*.log
