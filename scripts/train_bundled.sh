#!/usr/bin/env bash
# Rebuild everything the repo ships from training: the IsoFLOP grid (data/isoflop_results.json)
# and the three bundled models (models/playground-*), from the corpus (built first if missing).
#
#   bash scripts/train_bundled.sh                          # on a GPU: about 7 minutes on one H200
#   DEVICE=cpu THREADS=1 bash scripts/train_bundled.sh     # on a CPU: days on 2 cores; resumable
#   BUDGETS="2e14" MODELS="playground-1m" bash scripts/train_bundled.sh   # a subset
#
# Each grid budget and each model trains in its own process, all at once: tiny models leave a GPU
# mostly idle, so parallel processes overlap their kernel launches. Every job checkpoints under
# $RUNS and resumes, so running the script again finishes what a time limit or a kill cut short.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data/corpus}
RUNS=${RUNS:-runs/bundled}
DEVICE=${DEVICE:-cuda}
BUDGETS=${BUDGETS:-2e12 6e12 2e13 6e13 2e14}
MODELS=${MODELS:-playground-1m playground-4m playground-16m}
LIMIT_S=${LIMIT_S:-0}  # >0: stop every job after this many seconds (it resumes next time)
PYTHON=${PYTHON:-python3}
THREADS=${THREADS:-0}  # >0: torch threads per process (on a CPU, processes x threads <= cores)
MODELS_DIR=${MODELS_DIR:-models}
RESULTS=${RESULTS:-data/isoflop_results.json}
[ -f "$DATA/train.bin" ] || bash scripts/build_corpus.sh
mkdir -p "$RUNS/logs"
threads=(); [ "$THREADS" -gt 0 ] && threads=(--threads "$THREADS")
bf16=(); [ "$DEVICE" = cuda ] && bf16=(--bf16)  # bf16 autocast is slower on CPUs without bf16 matmuls
limit() { if [ "$LIMIT_S" -gt 0 ]; then timeout "$LIMIT_S" "$@"; else "$@"; fi; }

# name: shape flags and peak learning rate (smaller models take larger steps).
declare -A SHAPES=(
  [playground-1m]="--dim 96 --n-layers 3 --n-heads 4 --lr 2e-3"
  [playground-4m]="--dim 192 --n-layers 5 --n-heads 6 --lr 1.6e-3"
  [playground-16m]="--dim 384 --n-layers 8 --n-heads 8 --n-kv-heads 4 --lr 1.5e-3"
)

for budget in $BUDGETS; do
  limit "$PYTHON" -m llama_core scaling-grid --data "$DATA" --runs "$RUNS/isoflop" --device "$DEVICE" \
    --budgets "$budget" "${threads[@]}" --results "$RUNS/isoflop_$budget.json" >"$RUNS/logs/grid_$budget.log" 2>&1 &
done
# 15M tokens is 4 passes over the 3.8M-token corpus, about as far as repeated data still helps
# (Muennighoff et al. 2023); the same tokens for every size, so loss falls with size.
for name in $MODELS; do
  # shellcheck disable=SC2086  # SHAPES holds several flags
  limit "$PYTHON" -m llama_core train --data "$DATA" --out "$RUNS/$name" --device "$DEVICE" "${threads[@]}" "${bf16[@]}" \
    ${SHAPES[$name]} --max-seq-len 512 --batch-size 32 --tokens 1.5e7 --warmup-steps 50 \
    --eval-every 50 --checkpoint-every 100 >"$RUNS/logs/$name.log" 2>&1 &
done
wait

for name in $MODELS; do
  "$PYTHON" -m llama_core export-run --run "$RUNS/$name" --tokenizer models/tokenizer.model \
    --out "$MODELS_DIR/$name" --name "$name" >"$RUNS/logs/export_$name.log" 2>&1
done
results=(); for budget in $BUDGETS; do [ -f "$RUNS/isoflop_$budget.json" ] && results+=("$RUNS/isoflop_$budget.json"); done
[ ${#results[@]} -gt 0 ] && "$PYTHON" -m llama_core scaling-grid --merge "$RESULTS" "${results[@]}" \
  --results "$RESULTS" >"$RUNS/logs/fit.log" 2>&1
for f in "$RUNS"/logs/*.log; do echo "== $f"; tail -c 400 "$f" | tr '\r' '\n' | tail -3; done
