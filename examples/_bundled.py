"""Which bundled model the examples use when --model is not given."""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


def largest_bundled_model() -> Path | None:
    """The models/<name>/ directory with the largest weights file, or None if nothing is bundled.

    Looked up rather than named, so the examples keep working as models are added or renamed.
    """
    weights = [card.parent / "model.safetensors" for card in MODELS_DIR.glob("*/model_card.json")]
    weights = [w for w in weights if w.is_file()]
    return max(weights, key=lambda w: w.stat().st_size).parent if weights else None
