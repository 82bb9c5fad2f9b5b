#!/usr/bin/env bash
# Rebuild the bundled models from scratch: corpus, tokenizer, three model sizes, model cards.
# Every step resumes where it stopped if interrupted (run the script again).
# Wall time on 2 CPU cores: about 2.5 hours (the three trainings can run side by side, one core each).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f data/corpus/train.bin ] || bash scripts/build_corpus.sh

train() {  # name dim layers heads kv_heads tokens lr
  python3 -m llama_core train --data data/corpus --out "runs/$1" --dim "$2" --n-layers "$3" --n-heads "$4" \
    --n-kv-heads "$5" --tokens "$6" --lr "$7" --max-seq-len 512 --batch-size 8 --warmup-steps 50 \
    --eval-every 100 --checkpoint-every 25 --threads "${THREADS:-1}"
  python3 -m llama_core export-run --run "runs/$1" --tokenizer data/corpus/tokenizer.model \
    --out "models/$1" --name "$1" > /dev/null
}

train playground-1m 96 3 4 4 4e6 2e-3
train playground-4m 192 5 6 6 3e6 1.6e-3
train playground-16m 384 8 8 4 2.5e6 1.15e-3
