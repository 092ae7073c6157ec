#!/usr/bin/env bash
# Segmenters on Magnetic Tile that also learn from labelled real defects (--learn-share), beside an
# unsupervised control, trained side by side on the lent GPU machine with the product CLI.
# Carried (ignored folders): .whlm/ (cp312 wheels of sqlalchemy, alembic, mako: the image lacks them)
# and .mt/magnetic-tile (a copy of ../shared/data/manufacturing/magnetic-tile).
# Settings otherwise those of the selected C320 run (benchmarks/results/manufacturing_selection_magnetic_tile.json).
# RUNS: "name=extra train options" entries separated by ';'. Weights come back in $OUT as NAME.safetensors;
# register them here with `trillium manufacturing adopt` (same --shots/--seed/--learn-share).
set -euo pipefail
source benchmarks/device/trillium_env.sh .whlm
export OMP_NUM_THREADS=${THREADS:-5}
RUNS=${RUNS:-"unsup=;learn75f25=--learn-share 0.75 --real-fraction 0.25;learn75f50=--learn-share 0.75 --real-fraction 0.5"}
IFS=';' read -ra entries <<< "$RUNS"
for entry in "${entries[@]}"; do
  name=${entry%%=*}; extra=${entry#*=}
  ( TRILLIUM_HOME=/tmp/home-$name timeout ${LIMIT_S:-560} python3 -m trillium.core.cli manufacturing train \
      --data .mt/magnetic-tile --size 320 --steps ${STEPS:-6000} --batch-size 32 --width 16 --flips 2 --device cuda \
      --shots 20 --no-autotune $extra --json "$OUT/train_$name.json" > "$OUT/train_$name.log" 2>&1 \
    && cp /tmp/home-$name/registry/inspector/v1/weights.safetensors "$OUT/$name.safetensors" ) &
done
wait || true
ls -la "$OUT"; tail -n 3 "$OUT"/*.log
