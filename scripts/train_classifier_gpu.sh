#!/bin/bash
# Generate the training data and train the default classifier on a machine with many
# cores and a GPU (how models/classifier.* were made; see models/classifier.md).
# Env: OUT (results folder), DATA (scratch data folder), SEED0 (first training seed),
# NCHUNK, PER_CHUNK, VAL_SEEDS, VAL_COUNT, EPOCHS, SIZE (phantom size), INPUT (network
# input), EXTRA (more train args), NETS (space-separated NAME or NAME=NETWORK_ARGS_JSON:
# each trained into OUT/NAME on the same data, side by side on the one GPU; default
# "models", the default MammoNet), DEADLINE (seconds after the start at which training
# still running is stopped; its best epoch so far is in OUT/NAME/classifier.best.pt).
set -euo pipefail
PY=${PYTHON:-python3}
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}
OUT=${OUT:-out-gpu}; DATA=${DATA:-/tmp/data-cls}; SEED0=${SEED0:-1101}
NCHUNK=${NCHUNK:-15}; PER_CHUNK=${PER_CHUNK:-300}; VAL_SEEDS=${VAL_SEEDS:-3000}; VAL_COUNT=${VAL_COUNT:-300}
EPOCHS=${EPOCHS:-40}; SIZE=${SIZE:-512x416}; INPUT=${INPUT:-384x256}; DEVICE=${DEVICE:-cuda}
NETS=${NETS:-models}; DEADLINE=${DEADLINE:-86400}
mkdir -p "$OUT" "$DATA"
t0=$(date +%s)
# Training data: NCHUNK folders, seeds SEED0.., generated in parallel; validation: VAL_SEEDS.
pids=(); val_dirs=(); train_dirs=()
phantom() {  # folder count seed
  [ -f "$1/manifest.csv" ] || "$PY" -m cfia.cli phantom --out "$1" --count "$2" --seed "$3" --size "$SIZE" --quiet > /dev/null
}
for seed in $VAL_SEEDS; do
  val_dirs+=("$DATA/val-$seed"); phantom "$DATA/val-$seed" "$VAL_COUNT" "$seed" & pids+=($!)
done
for i in $(seq 0 $((NCHUNK - 1))); do
  seed=$((SEED0 + i)); train_dirs+=("$DATA/train-$seed")
  phantom "$DATA/train-$seed" "$PER_CHUNK" "$seed" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
echo "generated in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/log.txt"

train() {  # name [network args JSON]
  local args=(); [ -n "${2:-}" ] && args=(--network MammoNet --network-args "$2")
  mkdir -p "$OUT/$1"
  local left=$(( DEADLINE - ($(date +%s) - t0) )); [ "$left" -gt 1 ] || left=1
  timeout --signal=TERM "$left" \
    "$PY" -m cfia.cli train classifier --data "${train_dirs[@]}" --val-data "${val_dirs[@]}" --out "$OUT/$1" \
    --epochs "$EPOCHS" --input-size "$INPUT" --device "$DEVICE" --batch-size 64 --threads 4 \
    --workers "$(nproc)" --cache-dir "$DATA/cache" --seed 0 --force "${args[@]}" ${EXTRA:-} \
    > "$OUT/$1/result.json" 2> >(grep --line-buffered -v '%|' > "$OUT/$1/log.txt") || echo "$1: stopped (exit $?)" | tee -a "$OUT/log.txt"
}
pids=(); first=1
for net in $NETS; do
  name=${net%%=*}; netargs=""; [ "$net" != "$name" ] && netargs=${net#*=}
  train "$name" "$netargs" & pids+=($!)
  if [ $first = 1 ]; then  # the first run fills the preprocessing cache; the others then read it
    first=0
    until grep -q "training on" "$OUT/$name/log.txt" 2>/dev/null || ! kill -0 "${pids[0]}" 2>/dev/null; do sleep 2; done
  fi
done
for p in "${pids[@]}"; do wait "$p"; done
echo "total $(( $(date +%s) - t0 )) s" | tee -a "$OUT/log.txt"
