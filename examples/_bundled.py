"""Which bundled model the examples use when --model is not given."""

from __future__ import annotations

import json
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


def largest_bundled_model() -> Path | None:
    """The models/<name>/ directory with the largest weights file, or None if nothing is bundled.

    Looked up rather than named, so the examples keep working as models are added or renamed.
    """
    # The compute-matched models (llama_core/same_compute.py) are left out: the largest of them saw the
    # fewest tokens, and the examples want the best-trained model.
    weights = [card.parent / "model.safetensors" for card in MODELS_DIR.glob("*/model_card.json")
               if "same_compute" not in json.loads(card.read_text())]
    weights = [w for w in weights if w.is_file()]
    return max(weights, key=lambda w: w.stat().st_size).parent if weights else None
