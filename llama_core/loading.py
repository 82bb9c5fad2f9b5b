"""The public entry point: any supported checkpoint → a ready, eval-mode `Transformer`.

Formats are told apart by the files present and their content, never by extension. The model
is built on the meta device and receives the (memory-mapped) tensors by assignment, so weights
are never held twice; names and shapes are checked first so an error can say which file and
which tensor is wrong.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch
from torch import Tensor

from .config import ModelArgs, parameter_count
from .errors import CheckpointError, ParameterError, TokenizerError
from .formats.gguf import GGUF_MAGIC, GGUFCheckpoint, read_gguf, stored_gguf_bytes
from .formats.gguf_tensors import QuantizedTensor
from .formats.hf import WEIGHT_LAYOUTS, load_hf_checkpoint, weight_files
from .formats.hf_config import read_generation_config
from .formats.hub import download_snapshot, is_hub_id
from .formats.llama2c import load_llama2c, read_header
from .formats.meta import load_meta_checkpoint, shard_files, vocab_from_tokenizer
from .formats.tensor_checks import check_finite, check_names_and_shapes, untie
from .formats.tensor_files import CheckpointTensors, file_signature, read_json, stored_bytes
from .kernels.dtype_choice import NAMES, KernelChoice, choose_dtype, fits_fp16_exactly
from .kernels.page_release import converted as convert_releasing
from .kernels.page_release import release_file_pages, release_files_under
from .kernels.probe import KernelSpeeds, probe_kernels
from .kernels.quantized_model import (
    install_gguf_modules, is_projection, parse_quantize, placeholder, quantize_model, weights_label,
)
from .kernels.weight_layout import prepare_for_inference
from .model import Transformer
from .tokenizer import Tokenizer, find_tokenizer_files, load_tokenizer

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}  # fmt: skip
MIN_CONTEXT, MAX_CONTEXT = 16, 2**20  # the rotary table alone is 2**20 · head_dim/2 · 8 bytes at the top


@dataclass(frozen=True)
class LoadedModel:
    """A ready model with what the UI and CLI show about it."""

    model: Transformer
    tokenizer: Tokenizer | None
    format: str  # "hf", "meta", "llama2c" or "gguf"
    source: str  # as given: a path or a Hub repo id
    path: Path  # the local file or directory the weights were read from
    args: ModelArgs
    dtype: torch.dtype
    n_params: int
    n_bytes: int
    model_card: dict | None
    # Every id that ends a run: config.json's, generation_config.json's and the tokenizer's (lists included).
    eos_ids: tuple[int, ...] = ()
    # The checkpoint's own sampling defaults (generation_config.json), in SamplingParams' names, only
    # the keys it sets; `do_sample: false` there reads as {"temperature": 0.0}.
    generation_defaults: dict = field(default_factory=dict)
    context_length: int = 0  # positions the model runs with (args.max_seq_len)
    trained_context_length: int = 0  # positions the checkpoint was trained on
    chat_template: str | None = None  # the tokenizer's Jinja chat template, when it ships one
    kernels: KernelChoice | None = None  # how the weights are held and multiplied, and why (None off the CPU)

    def __post_init__(self) -> None:
        # Defaults for instances built by hand (tests, tools): what the model and tokenizer say themselves.
        if not self.eos_ids and self.tokenizer is not None:
            object.__setattr__(self, "eos_ids", tokenizer_eos_ids(self.tokenizer))
        if not self.context_length:
            object.__setattr__(self, "context_length", self.args.max_seq_len)
        if not self.trained_context_length:
            object.__setattr__(self, "trained_context_length", self.context_length)


def detect_format(path: str | Path) -> str:
    """The checkpoint format ("hf", "meta", "llama2c" or "gguf"), from a directory's files or a file's content."""
    path = Path(path)
    if path.is_file():
        if _starts_with(path, GGUF_MAGIC):
            return "gguf"
        if file_signature(path) == "safetensors":
            raise CheckpointError(f"{path.name}: a lone safetensors file; pass the directory holding its config.json")
        read_header(path)  # explains what is wrong with a file that is not llama2.c (a zip, a short file)
        return "llama2c"
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such file or directory")
    if (path / "config.json").exists():
        return "hf"
    if any(path.glob("*.gguf")) and not any((path / n).exists() for layout in WEIGHT_LAYOUTS for n in layout):
        return "gguf"
    if (path / "params.json").exists() or any(path.glob("consolidated.*.pth")):
        return "meta"
    if any((path / name).exists() for layout in WEIGHT_LAYOUTS for name in layout):
        return "hf"  # the HF reader then reports the missing config.json
    found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
    raise CheckpointError(
        f"{path}: no recognisable checkpoint; expected config.json + safetensors/pytorch_model.bin (Hugging Face), "
        f"params.json + consolidated.NN.pth (Meta), a .gguf file, or pass a llama2.c .bin file itself (found: {found})"
    )


def estimate_checkpoint_bytes(path: str | Path) -> int:
    """Bytes of weights a local checkpoint stores, read from headers only (nothing is loaded)."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "llama2c":
        return read_header(path).weight_bytes
    if fmt == "gguf":
        return stored_gguf_bytes(path)
    files = weight_files(path) if fmt == "hf" else shard_files(path)
    return sum(stored_bytes(f) for f in files)


def load_checkpoint(
    source: str | Path,
    dtype: torch.dtype | str = "auto",
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_dir: str | None = None,
    quantize: str | None = None,
    fast_layout: bool = True,
    check_memory: bool = True,
    context_length: int | None = None,
) -> LoadedModel:
    """Load a Hugging Face directory or Hub id, a Meta directory, or a llama2.c file.

    The config and the weights' headers are read first and the tokenizer second, so the first error
    reported is about the model itself.

    Args:
        dtype: "auto" keeps the checkpoint's precision: on the CPU, the dtype among those that hold every
            stored weight exactly whose kernel this machine runs fastest (`kernels/dtype_choice.py`, measured
            by `kernels/probe.py`); otherwise fp32/bf16/fp16, as asked.
        device_map: None keeps the model on the CPU; a device name ("cuda:0") moves it there; "auto"
            or an accelerate device map ({"layers.0": "cpu", "layers.1": "disk", ...}) dispatches it
            with accelerate, offloading to `offload_dir` whatever `max_memory` leaves no room for.
        quantize: None, "int8", or "int4" ("int4-g32", "-g64", "-g128": inputs per scale; int4 = g32) for
            weight-only quantized projections (CPU only; `kernels/`). None keeps a GGUF file's quantized
            tensors quantized (`kernels/quantized_model.py`) unless a float dtype is asked for.
        check_memory: refuse weights larger than the free memory, from the headers, before reading
            any (callers that make room first, like the app's registry, check themselves).
        fast_layout: on the CPU, store the projections the way decode reads them fastest and fuse
            q/k/v and gate/up (`kernels/weight_layout.py`); the same numbers, about 1.2-1.3× faster decode.
        context_length: positions to run with instead of the checkpoint's own (at least 16); above the
            trained length it warns, since quality degrades there unless RoPE scaling was trained for it.
    """
    requested_dtype = _parse_dtype(dtype)
    quantization = parse_quantize(quantize)
    if quantize is not None and device_map is not None:
        raise ParameterError("quantize", f"used without device_map ({quantize} runs on the CPU)", quantize)
    if device_map is None and (max_memory is not None or offload_dir is not None):
        raise ParameterError("device_map", "set when max_memory or offload_dir is given", device_map)
    _check_context_length(context_length)
    path = download_snapshot(source) if is_hub_id(source) else Path(source).expanduser()
    fmt = detect_format(path)
    if device_map is None and check_memory:
        _check_fits_in_memory(path)
    folder = path if path.is_dir() else path.parent
    card_path = folder / "model_card.json"
    card = read_json(card_path) if card_path.is_file() else None
    checkpoint = _read_checkpoint(path, fmt)
    release_files_under(folder)  # what the reader read to prepare its tensors (q/k un-permuted copies)
    generation_eos, defaults = read_generation_config(folder)
    with torch.device("meta"):
        skeleton = Transformer(checkpoint.args)
    tensors = untie(checkpoint)
    check_names_and_shapes(skeleton, tensors, checkpoint.origins, path)

    tokenizer_path = _find_tokenizer(folder, fmt, checkpoint)
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else None
    if fmt == "meta" and tokenizer is None and vocab_from_tokenizer(path):
        raise CheckpointError(
            f"params.json: vocab_size is -1, which means 'take it from the tokenizer', but no tokenizer.model "
            f"was found in {path} or its parent"
        )
    args = checkpoint.args
    if tokenizer is not None:
        _check_vocabulary(tokenizer, tokenizer_path, args, checkpoint.origins)
    trained = checkpoint.trained_context or args.max_seq_len
    if context_length is not None:
        if context_length > trained:
            warnings.warn(f"context_length {context_length} is above the {trained} positions {source} was trained "
                          "on; expect quality to degrade beyond them", stacklevel=2)
        args = args.replace(max_seq_len=context_length)
    speeds = probe_kernels() if device_map is None else None
    # The decode layout and the quantizers copy every projection anyway: they convert it in that copy.
    relaid = device_map is None and (fast_layout or quantization is not None)
    model, reason = _build_model(args, tensors, checkpoint, requested_dtype, speeds, quantization, relaid)
    gguf_kinds = {n: t.kind for n, t in tensors.items() if isinstance(t, QuantizedTensor) and is_projection(n)}
    # The model holds what it needs; the reader's tensors (a Hugging Face reader's un-permuted q/k copies
    # among them) would otherwise stay alive until this function returns, beside the re-laid-out copies.
    tensors.clear()
    checkpoint.tensors.clear()
    loaded_dtype = model.tok_embeddings.weight.dtype
    n_params = parameter_count(args)
    if quantization is not None:
        model = quantize_model(model, quantization)
    if device_map is None and fast_layout:
        model = prepare_for_inference(model)
    kernels = _kernel_choice(model, gguf_kinds, reason, speeds) if device_map is None else None
    n_bytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    if device_map is not None:
        model = _dispatch(model, device_map, max_memory, offload_dir)
    eos_ids = _union(checkpoint.eos_ids, generation_eos, tokenizer_eos_ids(tokenizer) if tokenizer else ())
    return LoadedModel(
        model, tokenizer, fmt, str(source), path, args, loaded_dtype, n_params, n_bytes, card,
        eos_ids=tuple(i for i in eos_ids if i < args.vocab_size), generation_defaults=defaults,
        context_length=args.max_seq_len, trained_context_length=trained,
        chat_template=getattr(tokenizer, "chat_template", None), kernels=kernels,
    )


def tokenizer_eos_ids(tokenizer: Tokenizer) -> tuple[int, ...]:
    """The tokenizer's end-of-sequence ids: all it names, or its one eos id."""
    ids = getattr(tokenizer, "eos_ids", None)
    if ids:
        return tuple(ids)
    return (tokenizer.eos_id,) if tokenizer.eos_id is not None and tokenizer.eos_id >= 0 else ()


def _union(*groups: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(i for group in groups for i in group))  # first-seen order, no repeats


def _starts_with(path: Path, magic: bytes) -> bool:
    with open(path, "rb") as f:
        return f.read(len(magic)) == magic


def _check_context_length(context_length: object) -> None:
    if context_length is None:
        return
    if isinstance(context_length, bool) or not isinstance(context_length, int) or not (
            MIN_CONTEXT <= context_length <= MAX_CONTEXT):
        raise ParameterError("context_length", f"an integer in [{MIN_CONTEXT}, {MAX_CONTEXT}] or None (the "
                             "checkpoint's own)", context_length)


def _read_checkpoint(path: Path, fmt: str) -> CheckpointTensors:
    """Config and memory-mapped tensors under Meta's names; no tensor data is read yet."""
    if fmt == "hf":
        return load_hf_checkpoint(path)
    if fmt == "meta":
        return load_meta_checkpoint(path)
    if fmt == "gguf":
        return read_gguf(path)  # quantized tensors stay blocks until _build_model's `.to(dtype)` decodes them
    return load_llama2c(path)


def _check_vocabulary(tokenizer: Tokenizer, tokenizer_path: Path, args: ModelArgs, origins: dict[str, str]) -> None:
    """A model may have more embedding rows than its tokenizer has tokens (padding: Alpaca's [PAD] row, sizes
    rounded up to a multiple of 64), never fewer."""
    rows_in = origins.get("tok_embeddings.weight", "the weights")
    if tokenizer.vocab_size > args.vocab_size:
        raise TokenizerError(
            f"{tokenizer_path}: tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{args.vocab_size} (embedding rows in {rows_in}); a tokenizer larger than the model's vocabulary "
            "belongs to another model"
        )
    if tokenizer.vocab_size * 2 < args.vocab_size:
        warnings.warn(
            f"{tokenizer_path}: the tokenizer has {tokenizer.vocab_size} tokens for {args.vocab_size} embedding rows "
            f"in {rows_in}; rows beyond the tokenizer are never sampled. Is this the model's own tokenizer?",
            stacklevel=3)




def format_bytes(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MiB"


def _check_fits_in_memory(path: Path) -> None:
    """Refuse, from the headers alone, weights larger than the free memory (before reading any)."""
    needed, free = estimate_checkpoint_bytes(path), psutil.virtual_memory().available
    if needed > free:
        raise CheckpointError(
            f"{path}: the weights need ~{format_bytes(needed)} of memory and {format_bytes(free)} is free; "
            "pass device_map='auto' with an offload_dir (CLI: --device-map auto --offload-dir DIR) to spill "
            "layers to disk")


def _build_model(args: ModelArgs, tensors: dict, checkpoint: CheckpointTensors, dtype: torch.dtype | None,
                 speeds: KernelSpeeds | None, quantization: tuple[str, int] | None,
                 relaid: bool) -> tuple[Transformer, str]:
    """An eval-mode model holding the (already checked) tensors, and why its weights have their dtype.

    Float tensors are converted to `dtype` (None: `_float_dtype` decides), one at a time, each giving back
    its file pages once copied; with `relaid`, float projections stay as stored for the layout step or the
    quantizer to convert in their own copy. A GGUF file's quantized projections go onto the int4/int8
    kernels instead, unless a float dtype was asked for without `quantize`."""
    with torch.device("meta"):
        model = Transformer(args)
    keep_blocks = quantization is not None or dtype is None
    quantized = {n: t for n, t in tensors.items() if keep_blocks and isinstance(t, QuantizedTensor) and is_projection(n)}
    embeddings = tensors["tok_embeddings.weight"]
    if args.tie_embeddings and keep_blocks and isinstance(embeddings, QuantizedTensor):
        quantized["output.weight"] = embeddings  # the head multiplies by the file's blocks; the lookup reads fp32 rows
    floats = {n: t for n, t in tensors.items() if n not in quantized}
    dtype, reason = _float_dtype(floats, checkpoint, dtype, speeds, bool(quantized) or quantization is not None)
    converted = {}
    for name, t in floats.items():
        if relaid and isinstance(t, Tensor) and is_projection(name):
            converted[name] = t  # (a tied head is the embeddings, converted below)
            continue
        if isinstance(t, QuantizedTensor):
            converted[name] = t.to(dtype)  # decoded a block of rows at a time
            release_file_pages(t.raw)
        else:
            converted[name] = convert_releasing(t, dtype)  # no copy when already in dtype
    for name, t in converted.items():
        check_finite({name: t}, checkpoint.origins)
        # The check samples rows, but a page fault maps a whole (large) folio of the file around each, so the
        # sample reads most of the tensor in: drop it before the next, as decode reads rows as it needs them.
        release_file_pages(t)
    tied = args.tie_embeddings and "output.weight" not in quantized
    if tied:
        converted["output.weight"] = converted["tok_embeddings.weight"]
    converted.update({name: placeholder(t) for name, t in quantized.items()})
    model.load_state_dict(converted, strict=True, assign=True)
    if tied:  # assign=True wraps each name in its own Parameter; share one again
        model.output.weight = model.tok_embeddings.weight
    install_gguf_modules(model, quantized, quantization)
    for t in quantized.values():
        release_file_pages(t.raw)
    model.reset_rope()
    return model.eval().requires_grad_(False), reason


def _float_dtype(tensors: dict, checkpoint: CheckpointTensors, requested: torch.dtype | None,
                 speeds: KernelSpeeds | None, quantized: bool) -> tuple[torch.dtype, str]:
    """The dtype of the float weights and why (`kernels/dtype_choice.py`). Beside quantized projections
    only the embeddings and norms are float: they keep their stored dtype, as no kernel speed is at stake."""
    stored = _checkpoint_dtype(checkpoint.tensors["tok_embeddings.weight"], checkpoint.origins)
    if quantized:
        # Embeddings stored as blocks decode to fp32 exactly (ggml decodes in fp32).
        blocks = isinstance(checkpoint.tensors["tok_embeddings.weight"], QuantizedTensor)
        dtype = requested or (torch.float32 if blocks else stored)
        return dtype, f"quantized projections; embeddings and norms {NAMES[dtype]}"
    fp32_fits = 4 * parameter_count(checkpoint.args) < psutil.virtual_memory().available / 2
    matrices = [t for n, t in tensors.items() if is_projection(n) or n == "tok_embeddings.weight"]
    return choose_dtype(stored, requested, speeds, fp32_fits, lambda: fits_fp16_exactly(matrices))


def _kernel_choice(model: Transformer, gguf_kinds: dict[str, str], reason: str,
                   speeds: KernelSpeeds | None) -> KernelChoice:
    residual = model.residual_dtype or model.tok_embeddings.weight.dtype
    return KernelChoice(weights_label(model, gguf_kinds), NAMES[residual], reason, speeds)


def _parse_dtype(dtype: torch.dtype | str) -> torch.dtype | None:
    """The requested dtype, or None for "auto"."""
    if dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ParameterError("dtype", "'auto', 'fp32', 'bf16', 'fp16' or the matching torch dtype", dtype)


def _checkpoint_dtype(embeddings: Tensor, origins: dict[str, str]) -> torch.dtype:
    if embeddings.dtype not in DTYPES.values():
        raise CheckpointError(
            f"{origins['tok_embeddings.weight']}: weights are stored as {embeddings.dtype}; "
            "pass dtype='fp32', 'bf16' or 'fp16' to convert them"
        )
    return embeddings.dtype


def _find_tokenizer(folder: Path, fmt: str, checkpoint: CheckpointTensors | None = None) -> Path | None:
    """The tokenizer's main file beside the weights (Meta's downloads keep one tokenizer.model above the
    per-size directories); which file, when several kinds are present, is the tokenizer package's choice.
    A GGUF file carries its own vocabulary (in its first part), used over any file beside it."""
    if isinstance(checkpoint, GGUFCheckpoint) and "tokenizer.ggml.model" in checkpoint.metadata:
        return checkpoint.files[0]
    for candidate in [folder, folder.parent] if fmt == "meta" else [folder]:
        files = find_tokenizer_files(candidate)
        if files:
            return files[0]
    return None


def _dispatch(
    model: Transformer, device_map: str | dict, max_memory: dict | None, offload_dir: str | None
) -> Transformer:
    """Spread the model over devices with accelerate (imported here: only this path needs it)."""
    from accelerate import dispatch_model, infer_auto_device_map

    if device_map == "auto":
        device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=["TransformerBlock"])
    elif isinstance(device_map, str):
        device_map = {"": device_map}
    folder = None
    if "disk" in device_map.values():
        if offload_dir is None:
            raise ParameterError("offload_dir", "a directory when the device map offloads to disk", offload_dir)
        # accelerate reuses any offload folder that already holds an index.json, whichever model
        # wrote it; give each load a fresh folder, removed together with the model.
        Path(offload_dir).mkdir(parents=True, exist_ok=True)
        folder = tempfile.mkdtemp(prefix="offload-", dir=offload_dir)
        weakref.finalize(model, shutil.rmtree, folder, ignore_errors=True)
    try:
        return dispatch_model(model, device_map=device_map, offload_dir=folder)
    except ValueError as e:  # accelerate's complaint about a map that leaves modules without a device
        raise ParameterError("device_map", f"a device map that places every module ({e})", device_map) from None
