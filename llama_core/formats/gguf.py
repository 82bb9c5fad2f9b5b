"""GGUF files (llama.cpp, Ollama, LM Studio) as inputs: recognised and described, not yet loaded.

Until GGUF import lands, a .gguf file is refused with what it holds and what can be loaded instead,
rather than being misread as some other format (its first bytes once parsed as a llama2.c header).
"""

from __future__ import annotations

import struct
from pathlib import Path

from ..errors import CheckpointError

GGUF_MAGIC = b"GGUF"
SUPPORTED_INPUTS = ("a Hugging Face directory (config.json + safetensors or pytorch_model*.bin), a Meta directory "
                    "(params.json + consolidated.NN.pth), or a llama2.c .bin file")


def describe_gguf(path: Path) -> str:
    """A short description of a GGUF file from its header: version, architecture, tensor count, file type."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24:
        return f"a truncated GGUF file ({path.stat().st_size} bytes)"
    version, n_tensors = struct.unpack_from("<IQ", head, 4)
    facts = [f"GGUF v{version}", f"{n_tensors} tensors"]
    try:
        from gguf import GGUFReader  # the gguf package reads the metadata without loading tensor data

        fields = GGUFReader(path).fields
        for key, label in (("general.architecture", "architecture"), ("general.name", "name")):
            if key in fields:
                facts.append(f"{label} {fields[key].contents()!r}")
        if "general.file_type" in fields:
            from gguf import LlamaFileType

            facts.append(f"file type {LlamaFileType(fields['general.file_type'].contents()).name}")
    except Exception as e:  # noqa: BLE001 — a damaged header still gets a useful refusal
        facts.append(f"metadata unreadable: {e}")
    return ", ".join(facts)


def refuse_gguf(path: Path) -> None:
    """Raise the CheckpointError that says a GGUF file cannot be loaded (yet), and what can be."""
    raise CheckpointError(
        f"{path.name}: a GGUF file ({describe_gguf(path)}); loading GGUF is not supported yet. Supported: "
        f"{SUPPORTED_INPUTS}. (This app writes GGUF: python -m llama_core export-gguf.)"
    )
