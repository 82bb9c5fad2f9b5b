"""karpathy/llama2.c `.bin` checkpoints: an int32 header, then raw little-endian fp32 arrays.

Two layouts, as llama2.c's export.py writes them: `legacy_export` (version 0: seven int32
params, a negative vocab_size meaning an unshared classifier) and `version1_export` (a
256-byte header starting with the magic "ak42"). Version 2 (Q8_0 int8) is refused.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..config import ModelArgs
from ..errors import CheckpointError
from ..rope import rope_frequencies
from .tensor_files import ZIP_MAGIC, CheckpointTensors

MAGIC = 0x616B3432  # "ak42" read as a little-endian uint32
V0_HEADER = struct.Struct("<7i")  # dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, max_seq_len
V1_HEADER = struct.Struct("<Ii7iB")  # magic, version, the same 7 params, shared_classifier
V1_HEADER_BYTES = 256  # zero-padded
PARAM_NAMES = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "max_seq_len")


def tensor_layout(args: ModelArgs, version: int) -> list[tuple[str | None, tuple[int, ...]]]:
    """The fp32 arrays in file order, as export.py writes them.

    Names containing "{}" are stacked over layers (leading dim n_layers), as llama2.c's run.c
    reads them; None marks an array to skip.
    """
    L, d, V = args.n_layers, args.dim, args.vocab_size
    kv, h = args.kv_heads * args.head_dim, args.ffn_hidden_dim
    embeddings = ("tok_embeddings.weight", (V, d))
    attention_norm = ("layers.{}.attention_norm.weight", (L, d))
    ffn_norm = ("layers.{}.ffn_norm.weight", (L, d))
    attention = [
        ("layers.{}.attention.wq.weight", (L, d, d)),
        ("layers.{}.attention.wk.weight", (L, kv, d)),
        ("layers.{}.attention.wv.weight", (L, kv, d)),
        ("layers.{}.attention.wo.weight", (L, d, d)),
    ]
    feed_forward = [
        ("layers.{}.feed_forward.w1.weight", (L, h, d)),
        ("layers.{}.feed_forward.w2.weight", (L, d, h)),
        ("layers.{}.feed_forward.w3.weight", (L, h, d)),
    ]
    norm = ("norm.weight", (d,))
    if version == 0:
        rope_table = (None, (args.max_seq_len, args.head_dim // 2))  # freq_cis_real, then freq_cis_imag
        layout = [embeddings, attention_norm, *attention, ffn_norm, *feed_forward, norm, rope_table, rope_table]
    else:
        layout = [attention_norm, ffn_norm, norm, embeddings, *attention, *feed_forward]
    if not args.tie_embeddings:
        layout.append(("output.weight", (V, d)))
    return layout


@dataclass(frozen=True)
class Llama2cHeader:
    """A validated header: which layout follows it, and the model it describes."""

    version: int
    args: ModelArgs
    header_bytes: int

    @property
    def expected_bytes(self) -> int:
        """The exact file size this header implies."""
        return self.header_bytes + 4 * sum(math.prod(shape) for _, shape in tensor_layout(self.args, self.version))

    @property
    def weight_bytes(self) -> int:
        """Bytes of the weights the model keeps (v0's skipped rotary tables excluded)."""
        return 4 * sum(math.prod(shape) for name, shape in tensor_layout(self.args, self.version) if name)


def read_header(path: Path) -> Llama2cHeader:
    """Parse and validate the header, including that the file size is exactly what it implies."""
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(V1_HEADER_BYTES)
    if head.startswith(ZIP_MAGIC):
        raise CheckpointError(
            f"{path.name}: this is a PyTorch (zip) file, not a llama2.c checkpoint; "
            "pass the directory that holds it with its params.json or config.json"
        )
    if len(head) >= 8 and struct.unpack_from("<I", head)[0] == MAGIC:
        version = struct.unpack_from("<i", head, 4)[0]
        if version == 2:
            raise CheckpointError(
                f"{path.name}: llama2.c version 2 (Q8_0 int8) files are not supported; "
                "re-export it with llama2.c's export.py --version 1"
            )
        if version != 1 or len(head) < V1_HEADER.size:
            raise CheckpointError(f"{path.name}: unknown or truncated llama2.c header (version {version})")
        _, _, *params, shared = V1_HEADER.unpack_from(head)
        header_bytes = V1_HEADER_BYTES
    else:
        if len(head) < V0_HEADER.size:
            raise CheckpointError(f"{path.name}: {file_size} bytes is too short for a llama2.c checkpoint")
        version, header_bytes = 0, V0_HEADER.size
        params = list(V0_HEADER.unpack_from(head))
        shared, params[5] = params[5] > 0, abs(params[5])  # the sign of vocab_size flags the classifier
    described = ", ".join(f"{n}={v}" for n, v in zip(PARAM_NAMES, params))
    dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, max_seq_len = params
    if min(params) <= 0 or dim % n_heads or n_heads % n_kv_heads or (dim // n_heads) % 2:
        raise CheckpointError(
            f"{path.name}: not a valid llama2.c header ({described}): every field must be positive, "
            "dim divisible by n_heads into an even head size, and n_heads by n_kv_heads"
        )
    args = ModelArgs(
        dim=dim, hidden_dim=hidden_dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
        vocab_size=vocab_size, max_seq_len=max_seq_len, tie_embeddings=bool(shared),
    )  # fmt: skip
    header = Llama2cHeader(version, args, header_bytes)
    if header.expected_bytes != file_size:
        problem = "truncated" if file_size < header.expected_bytes else "has trailing data"
        raise CheckpointError(
            f"{path.name}: header says {header.expected_bytes} bytes, file has {file_size} "
            f"({problem}; llama2.c v{version} header: {described})"
        )
    return header


def load_llama2c(path: Path) -> CheckpointTensors:
    """Memory-map a llama2.c file; every tensor is a view into the mapping, nothing is copied."""
    header = read_header(path)
    args = header.args
    flat = torch.from_file(str(path), shared=False, size=path.stat().st_size // 4, dtype=torch.float32)
    tensors: dict[str, Tensor] = {}
    offset = header.header_bytes // 4
    for name, shape in tensor_layout(args, header.version):
        block = flat[offset : offset + math.prod(shape)].view(shape)
        offset += block.numel()
        if name is None:
            continue
        if "{}" in name:
            tensors.update((name.format(i), block[i]) for i in range(args.n_layers))
        else:
            tensors[name] = block
    return CheckpointTensors(args, tensors, dict.fromkeys(tensors, path.name))


def save_llama2c(state_dict: dict[str, Tensor], args: ModelArgs, path: str | Path, version: int = 0) -> Path:
    """Write `state_dict` (Meta names) as a llama2.c v0 or v1 file, exactly as export.py would."""
    if version not in (0, 1):
        raise ValueError(f"llama2.c version must be 0 or 1, got {version}")
    path = Path(path)
    embeddings = state_dict["tok_embeddings.weight"]
    shared = "output.weight" not in state_dict or torch.equal(state_dict["output.weight"], embeddings)
    args = args.replace(hidden_dim=args.ffn_hidden_dim, tie_embeddings=shared)
    params = [args.dim, args.hidden_dim, args.n_layers, args.n_heads, args.kv_heads, args.vocab_size, args.max_seq_len]
    rope = rope_frequencies(args.head_dim, args.max_seq_len, args.rope_theta)
    rope_tables = iter([rope.real, rope.imag])  # llama2.c readers skip these; written for fidelity
    with open(path, "wb") as f:
        if version == 0:
            params[5] = params[5] if shared else -params[5]
            f.write(V0_HEADER.pack(*params))
        else:
            f.write(V1_HEADER.pack(MAGIC, 1, *params, shared).ljust(V1_HEADER_BYTES, b"\0"))
        for name, shape in tensor_layout(args, version):
            if name is None:
                t = next(rope_tables)
            elif "{}" in name:
                t = torch.stack([state_dict[name.format(i)] for i in range(args.n_layers)])
            else:
                t = state_dict[name]
            if tuple(t.shape) != shape:
                raise ValueError(f"tensor '{name}' has shape {tuple(t.shape)}, the header implies {shape}")
            f.write(t.detach().to(torch.float32).contiguous().numpy().tobytes())
    return path
