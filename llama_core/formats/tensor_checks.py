"""Checks of a checkpoint's tensors against the model its config describes, before any is used.

Every error names the file, the tensor and what was expected, so that a wrong download or conversion
can be told from a bug.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..errors import CheckpointError
from ..model import Transformer
from .tensor_files import CheckpointTensors

MAX_LISTED = 5  # names shown when listing missing / unexpected tensors


def untie(checkpoint: CheckpointTensors) -> dict[str, Tensor]:
    """The tensors to load, without an output head that merely repeats tied embeddings."""
    tensors = dict(checkpoint.tensors)
    output, embeddings = tensors.get("output.weight"), tensors.get("tok_embeddings.weight")
    if checkpoint.args.tie_embeddings and output is not None and embeddings is not None:
        if output.shape != embeddings.shape or not torch.equal(output, embeddings):
            raise CheckpointError(
                f"{checkpoint.origins['output.weight']}: the config ties the output head to the embeddings, "
                "but output.weight differs from tok_embeddings.weight"
            )
        del tensors["output.weight"]
    return tensors


def _listed(names: list[str], origins: dict[str, str] | None = None) -> str:
    shown = [f"'{n}'" + (f" (in {origins[n]})" if origins else "") for n in names[:MAX_LISTED]]
    return ", ".join(shown) + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def check_names_and_shapes(
    model: Transformer, tensors: dict[str, Tensor], origins: dict[str, str], path: Path
) -> None:
    """Compare against the model built from the config, so errors name files, tensors and shapes."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if model.args.tie_embeddings:
        del expected["output.weight"]
    missing = [name for name in expected if name not in tensors]
    unexpected = [name for name in tensors if name not in expected]
    if missing or unexpected:
        problems = [f"{len(missing)} tensor(s) missing: {_listed(missing)}"] if missing else []
        problems += [f"{len(unexpected)} unexpected tensor(s): {_listed(unexpected, origins)}"] if unexpected else []
        raise CheckpointError(f"{path}: checkpoint does not match its config: {'; '.join(problems)}")
    for name, shape in expected.items():
        got = tuple(tensors[name].shape)
        if got != shape:
            raise CheckpointError(
                f"{origins[name]}: tensor '{name}' has wrong shape: expected {shape} from config, got {got} in file"
            )


def check_finite(tensors: dict[str, Tensor], origins: dict[str, str]) -> None:
    """Refuse NaN/Inf, checking every norm and an even sample of embedding rows: enough to catch a
    broken conversion while leaving most of a memory-mapped file untouched."""
    for name, t in tensors.items():
        if name.endswith("norm.weight"):
            sample = t
        elif name in ("tok_embeddings.weight", "output.weight"):
            sample = t[:: max(1, t.shape[0] // 64)]
        else:
            continue
        if not torch.isfinite(sample).all():
            raise CheckpointError(f"{origins[name]}: tensor '{name}' contains NaN or Inf values (as {t.dtype})")
