#!/usr/bin/env bash
# Assemble the training corpus from Debian packages (no other download) and tokenize it.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v bible >/dev/null || [ ! -d /usr/share/doc/python3.11/html/_sources ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11-doc bible-kjv
fi
# Reuse the committed tokenizer so rebuilt token files match the bundled models.
python3 -m llama_core corpus --out data/corpus --tokenizer models/tokenizer.model
