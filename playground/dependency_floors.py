"""The oldest Gradio and torch this app is safe to serve on, checked before anything starts.

Gradio ships security fixes only in its latest release; 6.20 is the first with every fix the
app relies on (file-route SSRF, blocked-path bypasses). torch.load(weights_only=True) is only
trusted from torch 2.10 on: older torch still serves safetensors, but pickled checkpoints are
refused when loaded (`llama_core.formats.tensor_files.MIN_TORCH_FOR_PICKLES`).
"""

from __future__ import annotations

import importlib.util
import warnings

import gradio as gr
import torch

from llama_core.formats.tensor_files import MIN_TORCH_FOR_PICKLES

MIN_GRADIO = (6, 20)


def version_tuple(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as '6.31.0' or '2.13.0+cpu'."""
    major, minor = str(version).split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def _floor(version: tuple[int, int]) -> str:
    return ".".join(map(str, version))


def dependency_problems(gradio_version: str, torch_version: str, has_safetensors: bool) -> tuple[list[str], list[str]]:
    """(fatal problems, warnings) for these versions."""
    fatal, warn = [], []
    if version_tuple(gradio_version) < MIN_GRADIO:
        fatal.append(f"gradio {gradio_version} is older than {_floor(MIN_GRADIO)}, the oldest release with the "
                     f"security fixes this app relies on: pip install -U 'gradio>={_floor(MIN_GRADIO)},<7'")
    if not has_safetensors:
        fatal.append("the safetensors package is missing: pip install safetensors")
    if version_tuple(torch_version) < MIN_TORCH_FOR_PICKLES:
        warn.append(f"torch {torch_version} is older than {_floor(MIN_TORCH_FOR_PICKLES)}: pickled checkpoints "
                    "(.pth, pytorch_model.bin) will be refused; safetensors checkpoints load as usual")
    return fatal, warn


def require_dependency_floors() -> None:
    """Exit with a message when a dependency is below its floor; warn when only pickles are affected."""
    fatal, warn = dependency_problems(gr.__version__, torch.__version__,
                                      importlib.util.find_spec("safetensors") is not None)
    for message in warn:
        warnings.warn(message, stacklevel=2)
    if fatal:
        raise SystemExit("LLaMA Playground cannot start:\n  " + "\n  ".join(fatal))
