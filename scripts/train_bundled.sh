#!/usr/bin/env bash
# Rebuild the bundled models from scratch: corpus, tokenizer, the IsoFLOP grid, three model sizes with cards.
# Every step resumes where it stopped when run again (runs/ keeps the checkpoints).
# CPU time on 2 cores: about 1.5 h for the grid and 1.5 h for playground-16m (run side by side, one thread each).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f data/corpus/train.bin ] || bash scripts/build_corpus.sh
tokenizer=data/corpus/tokenizer.model

# The two smaller bundled models are the 6e12-FLOP runs of the IsoFLOP grid (context 256): equal compute.
python3 -m llama_core scaling-grid --data data/corpus --runs runs/isoflop --results data/isoflop_results.json --threads 1
python3 -m llama_core export-run --run "runs/isoflop/C6e+12-d96" --tokenizer "$tokenizer" --out models/playground-1m --name playground-1m
python3 -m llama_core export-run --run "runs/isoflop/C6e+12-d192" --tokenizer "$tokenizer" --out models/playground-4m --name playground-4m

# The default: 16M parameters with grouped-query attention (8 query heads, 4 key/value heads), context 512.
python3 -m llama_core train --data data/corpus --out runs/playground-16m --dim 384 --n-layers 8 --n-heads 8 \
  --n-kv-heads 4 --tokens 2.5e6 --lr 1.15e-3 --max-seq-len 512 --batch-size 8 --warmup-steps 50 \
  --eval-every 100 --checkpoint-every 25 --threads 1
python3 -m llama_core export-run --run runs/playground-16m --tokenizer "$tokenizer" --out models/playground-16m --name playground-16m
