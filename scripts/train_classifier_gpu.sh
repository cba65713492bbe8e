#!/bin/bash
# Generate the training data and train the default classifier on a machine with many
# cores and a GPU (how models/classifier.* were made; see models/classifier.md).
# Env: OUT (results folder), DATA (scratch data folder), NCHUNK, PER_CHUNK, VAL_COUNT,
# EPOCHS, SIZE (phantom size), INPUT (network input), EXTRA (more train args).
set -euo pipefail
PY=${PYTHON:-python3}
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}
OUT=${OUT:-out-gpu}; DATA=${DATA:-/tmp/data-cls}
NCHUNK=${NCHUNK:-15}; PER_CHUNK=${PER_CHUNK:-300}; VAL_COUNT=${VAL_COUNT:-300}
EPOCHS=${EPOCHS:-40}; SIZE=${SIZE:-512x416}; INPUT=${INPUT:-384x256}; DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT" "$DATA"
t0=$(date +%s)
# Training data: NCHUNK folders, seeds 1101.., generated in parallel; validation: seed 3000.
pids=()
[ -f "$DATA/val/manifest.csv" ] || { "$PY" -m cfia.cli phantom --out "$DATA/val" --count "$VAL_COUNT" --seed 3000 --size "$SIZE" --quiet > /dev/null & pids+=($!); }
train_dirs=()
for i in $(seq 1 "$NCHUNK"); do
  seed=$((1100 + i)); d="$DATA/train-$seed"; train_dirs+=("$d")
  [ -f "$d/manifest.csv" ] && continue
  "$PY" -m cfia.cli phantom --out "$d" --count "$PER_CHUNK" --seed "$seed" --size "$SIZE" --quiet > /dev/null & pids+=($!)
done
for p in "${pids[@]+"${pids[@]}"}"; do wait "$p"; done
echo "generated in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/log.txt"
"$PY" -m cfia.cli train classifier --data "${train_dirs[@]}" --val-data "$DATA/val" --out "$OUT/models" \
  --epochs "$EPOCHS" --input-size "$INPUT" --device "$DEVICE" --batch-size 64 --threads 4 \
  --workers "$(nproc)" --cache-dir "$DATA/cache" --seed 0 ${EXTRA:-} 2> >(grep -v '%|' >> "$OUT/log.txt") | tee -a "$OUT/log.txt"
echo "total $(( $(date +%s) - t0 )) s" | tee -a "$OUT/log.txt"
