"""Reading tensor files safely: safetensors first, PyTorch zip pickles only through `weights_only`.

Both readers memory-map the file, so a loaded tensor is a view of the page cache rather than
a second copy in RAM, and every failure becomes a `CheckpointError` that names the file.
"""

from __future__ import annotations

import json
import math
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from ..config import ModelArgs
from ..errors import CheckpointError

# A real header holds a few hundred bytes per tensor; anything bigger is corrupt or hostile,
# and we refuse before allocating a buffer of the size it claims.
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024

# torch.load(weights_only=True) could still be made to run code before 2.6 (CVE-2025-32434) and
# had further unpickler fixes through 2.10 (CVE-2026-24747); older versions get no pickles at all.
MIN_TORCH_FOR_PICKLES = (2, 10)

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTO = b"\x80"  # the opcode a pickle starts with; torch.save wrote bare pickles before 1.6

SAFETENSORS_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


@dataclass(frozen=True)
class CheckpointTensors:
    """What every format reader returns: the config, the tensors under Meta's names, and for
    each tensor the file it came from, so that later errors can point at that file."""

    args: ModelArgs
    tensors: dict[str, Tensor]
    origins: dict[str, str]
    eos_ids: tuple[int, ...] = ()  # end-of-sequence ids the checkpoint's own config names
    trained_context: int | None = None  # when it differs from args.max_seq_len (Meta's Llama 3.1)


def read_json(path: Path) -> dict:
    """A JSON object from `path`, or a CheckpointError naming the file and the problem."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path.name}: file not found in {path.parent}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path.name}: invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path.name}: expected a JSON object, got {type(data).__name__}")
    return data


def file_signature(path: Path) -> str:
    """Classify a file by its first bytes: "zip", "safetensors", "pickle" or "unknown"."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if len(head) == 9 and head[8:9] == b"{":  # 8-byte little-endian header length, then JSON
        return "safetensors"
    if head.startswith(PICKLE_PROTO):
        return "pickle"
    return "unknown"


def read_safetensors_header(path: Path) -> dict:
    """The tensor entries of a safetensors header, checked without trusting any size it declares."""
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path.name}: file is truncated/corrupt ({file_size} bytes, no safetensors header)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > MAX_SAFETENSORS_HEADER:
            raise CheckpointError(
                f"{path.name}: file is truncated/corrupt: safetensors header claims {header_len} bytes "
                f"(limit {MAX_SAFETENSORS_HEADER})"
            )
        if 8 + header_len > file_size:
            raise CheckpointError(
                f"{path.name}: file is truncated/corrupt: header needs {8 + header_len} bytes, file has {file_size}"
            )
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path.name}: file is truncated/corrupt: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name}: file is corrupt: safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    data_size = file_size - 8 - header_len
    for name, info in header.items():
        try:
            begin, end = info["data_offsets"]
            itemsize = SAFETENSORS_ITEMSIZE.get(info["dtype"])
            numel = math.prod(info["shape"])
            in_bounds = 0 <= begin <= end <= data_size
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path.name}: file is corrupt: malformed header entry for tensor '{name}'") from None
        if not in_bounds:
            raise CheckpointError(
                f"{path.name}: file is truncated/corrupt: tensor '{name}' lies at bytes {begin}..{end} "
                f"but the data section has only {data_size} bytes"
            )
        if itemsize is not None and numel * itemsize != end - begin:
            raise CheckpointError(
                f"{path.name}: file is corrupt: tensor '{name}' of shape {tuple(info['shape'])} "
                f"needs {numel * itemsize} bytes, header gives it {end - begin}"
            )
    return header


def load_safetensors(path: Path) -> dict[str, Tensor]:
    """Memory-mapped tensors of a validated safetensors file."""
    read_safetensors_header(path)
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            return {name: f.get_tensor(name) for name in f.keys()}
    except SafetensorError as e:
        raise CheckpointError(f"{path.name}: file is truncated/corrupt ({e})") from None


def zip_entries(path: Path) -> list[zipfile.ZipInfo]:
    """The entries of a zip's central directory, which a truncated file has lost."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.infolist()
    except zipfile.BadZipFile:
        raise CheckpointError(f"{path.name}: truncated or corrupt zip archive (re-download it)") from None


def torch_version() -> tuple[int, int]:
    major, minor = str(torch.__version__).split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def load_pickle(path: Path) -> dict[str, Tensor]:
    """Load a PyTorch zip checkpoint with `weights_only=True`; never retried without it."""
    if torch_version() < MIN_TORCH_FOR_PICKLES:
        floor = ".".join(map(str, MIN_TORCH_FOR_PICKLES))
        raise CheckpointError(
            f"{path.name}: pickled checkpoints need torch >= {floor}, whose torch.load(weights_only=True) has the "
            f"known code-execution fixes; this is torch {torch.__version__}. Upgrade torch, or use safetensors "
            "weights, which load with any version"
        )
    zip_entries(path)  # torch's own reader reports a truncated archive only as "Invalid argument"
    try:
        state = torch.load(path, weights_only=True, mmap=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        lines = str(e).splitlines()
        reason = next((line for line in lines if "unsupported" in line.lower()), lines[-1])  # names the global
        raise CheckpointError(
            f"{path.name}: unsupported or unsafe checkpoint: it stores more than plain tensors and was refused "
            f"by torch.load(weights_only=True): {reason.strip()} Convert it to safetensors in a trusted environment."
        ) from None
    except (RuntimeError, OSError) as e:
        if "_use_new_zipfile_serialization" in str(e):
            raise CheckpointError(
                f"{path.name}: saved in PyTorch's legacy (pre-1.6) format, which cannot be memory-mapped; "
                "re-save it with a current torch.save"
            ) from None
        raise CheckpointError(f"{path.name}: truncated or corrupt zip archive ({e})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        found = f"keys {list(state)[:5]}" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise CheckpointError(f"{path.name}: expected a flat dict of tensors (a state_dict), found {found}")
    return state


def load_tensor_file(path: Path) -> dict[str, Tensor]:
    """Load a safetensors or PyTorch zip file, told apart by content rather than by extension."""
    if not path.is_file():
        raise CheckpointError(f"{path.name}: file not found in {path.parent}")
    kind = file_signature(path)
    if kind == "zip":
        return load_pickle(path)
    if kind == "pickle":
        raise CheckpointError(
            f"{path.name}: unsupported checkpoint: a bare pickle (PyTorch's legacy format), which cannot be loaded "
            "safely; re-save it with a current torch.save or as safetensors"
        )
    return load_safetensors(path)  # its header check explains what is wrong with anything else


def stored_bytes(path: Path) -> int:
    """Bytes of tensor data in a safetensors or PyTorch zip file, read from its header or zip directory."""
    if file_signature(path) == "zip":
        # torch.save keeps each storage as "<archive>/data/<key>" next to the pickle that indexes them.
        return sum(info.file_size for info in zip_entries(path) if "/data/" in info.filename)
    header = read_safetensors_header(path)
    return sum(end - begin for begin, end in (info["data_offsets"] for info in header.values()))
