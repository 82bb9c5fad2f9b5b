"""Decode speed, prefill time and memory of llama_core against transformers and llama.cpp, on the same
weights and the same GGUF files, at each precision, with each engine's distance from the bandwidth limit.

    python examples/benchmark.py            # stories15M, stories110M, TinyLlama-1.1B, every mode (about an hour)
    python examples/benchmark.py --quick    # stories15M only, few tokens: a smoke run
    python examples/benchmark.py --configs tinyllama-1.1b --modes ours-int4 llama.cpp-q4_0

Each config's weights are made once (a seeded transformers LlamaForCausalLM written with
save_pretrained, plus a synthetic 32,000-piece SentencePiece vocabulary so that every engine
loads the same directory) and exported by us as an f16 GGUF, from which llama.cpp's own quantizer
(`llama_cpp.llama_model_quantize`) writes the q8_0, q4_0 and Q4_K_M files a llama.cpp user holds;
llama.cpp and our `ours-gguf-*` modes read the same files. Every engine × mode runs in its own
subprocess, so each RSS belongs to one engine alone; the engines take turns, `--rounds` times, each
keeping its best numbers. llama.cpp is the `llama-cpp-python` package (a test requirement; it compiles
llama.cpp, 6-15 minutes); without it its rows are skipped with a note. If llama.cpp's repacked
("extra") CPU buffers crash a worker (as for Q8_0 on AVX-512 + AMX with 0.3.36), that mode runs again
with its plain CPU kernels, and the row says so.

The header names the CPU, PyTorch's kernel capability and our kernel probe's choice (GB/s per kernel,
`llama_core/kernels/probe.py`). The bandwidth limit of a mode is the memory read bandwidth measured in this
run (a large tensor summed with the same threads) divided by the bytes of weights one decode step reads
(for our modes counted from the loaded model; for the others from the format).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from llama_core.config import PRESETS

CONFIGS = {"stories15m": "stories15M", "stories110m": "stories110M", "tinyllama-1.1b": "TinyLlama-1.1B"}
# mode: (engine, weights). Ours loads with the fast decode layout (the default) unless "plain"; "gguf-*"
# loads that GGUF file with the defaults (dtype auto: f16 by the kernel probe, quantized blocks kept).
MODES = {
    "ours-fp32": ("ours", "fp32"), "ours-plain-fp32": ("ours", "fp32"), "ours-bf16": ("ours", "bf16"),
    "ours-fp16": ("ours", "fp16"), "ours-int8": ("ours", "int8"), "ours-int4": ("ours", "int4"),
    "ours-int4-g128": ("ours", "int4-g128"), "ours-gguf-f16": ("ours", "gguf-f16"),
    "ours-gguf-q8_0": ("ours", "gguf-q8_0"), "ours-gguf-q4_0": ("ours", "gguf-q4_0"),
    "ours-gguf-q4_k_m": ("ours", "gguf-q4_k_m"),
    "transformers-fp32": ("transformers", "fp32"), "transformers-bf16": ("transformers", "bf16"),
    "llama.cpp-f32": ("llama.cpp", "f32"), "llama.cpp-f16": ("llama.cpp", "f16"), "llama.cpp-q8_0": ("llama.cpp", "q8_0"),
    "llama.cpp-q4_0": ("llama.cpp", "q4_0"), "llama.cpp-q4_k_m": ("llama.cpp", "q4_k_m"),
}
DEFAULT_MODES = [m for m in MODES if m not in ("ours-plain-fp32", "llama.cpp-f32", "ours-int4-g128")]
# Whom each of our modes is compared with: the same precision, or the nearest the peer has.
PEERS = {"ours-fp32": ("transformers-fp32", "llama.cpp-f32"), "ours-bf16": ("transformers-bf16", "llama.cpp-f16"),
         "ours-fp16": ("ours-bf16", "llama.cpp-f16"), "ours-gguf-f16": ("ours-fp16", "llama.cpp-f16"),
         "ours-int8": ("ours-bf16", "llama.cpp-q8_0"), "ours-gguf-q8_0": ("ours-int8", "llama.cpp-q8_0"),
         "ours-int4": ("ours-int8", "llama.cpp-q4_0"), "ours-int4-g128": ("ours-int4", "llama.cpp-q4_0"),
         "ours-gguf-q4_0": ("ours-int4", "llama.cpp-q4_0"), "ours-gguf-q4_k_m": ("ours-int4", "llama.cpp-q4_k_m"),
         "ours-plain-fp32": ("transformers-fp32", "ours-fp32")}
# Bytes a weight costs each format (llama.cpp's Q4_K_M mixes Q4_K, 4.5 bits, with Q6_K, 6.56: about 4.85).
BYTES_PER_WEIGHT = {"fp32": 4, "f32": 4, "bf16": 2, "f16": 2, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_k_m": 4.85 / 8}
# Files written by llama.cpp's quantizer from our f16 export (the f16 and f32 files are our exporter's).
LLAMACPP_FILE_TYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
                       "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}
DECODE_PROMPT_TOKENS = 8
ATTENTION_CONTEXT = 256  # the yardstick: capture cost with this many positions of context
SEED = 0


def log(message: str) -> None:
    print(f"[benchmark] {message}", file=sys.stderr, flush=True)


def prompt_ids(length: int, vocab_size: int) -> list[int]:
    # <s> then ids from 259 up (past <unk>, <s>, </s> and the 256 byte pieces): any text works for random weights.
    generator = torch.Generator().manual_seed(SEED)
    return [1] + torch.randint(259, vocab_size, (length - 1,), generator=generator).tolist()


def decode_rate(stamps: list[float]) -> float:
    """Tokens per second from the median gap between tokens: the first token's wait is prefill,
    measured on its own, and a median shrugs off short moments when others take our cores."""
    return 1 / statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


# --- the engines, each in its own subprocess ---------------------------------------------------


def ours(directory: Path, weights: str, plain: bool):
    """A `stream(prompt, n, capture)` function over llama_core's real streaming path, and the loaded model."""
    from llama_core.generation import generate_stream
    from llama_core.loading import load_checkpoint
    from llama_core.sampling import SamplingParams

    if weights.startswith("gguf-"):
        loaded = load_checkpoint(directory / f"model-{weights.removeprefix('gguf-')}.gguf")
    else:
        options = {"quantize": weights} if weights.startswith("int") else {"dtype": weights}
        loaded = load_checkpoint(directory, fast_layout=not plain, **options)

    def stream(prompt: list[int], n: int, capture: bool = False):
        params = SamplingParams(temperature=0.0, max_new_tokens=n)
        stamps, tokens = [], []
        start = time.perf_counter()
        for record in generate_stream(loaded.model, loaded.tokenizer, prompt, params, capture_attention=capture):
            stamps.append(time.perf_counter())  # when the consumer sees the token, records and all
            tokens.append(record.token_id)
        return start, stamps, tokens

    return stream, loaded


def decode_read_bytes(model) -> int:
    """Bytes of weights one decode step reads: every matrix (packed codes and scales included) but the
    embedding table, of which it reads one row — unless the output head is that table (tied)."""
    from torch import nn

    embeddings = model.tok_embeddings.weight
    total = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    tied_head = isinstance(model.output, nn.Linear) and model.output.weight is embeddings
    return total - (0 if tied_head else embeddings.numel() * embeddings.element_size())


def transformers_engine(directory: Path, weights: str):
    """The same `stream` interface over LlamaForCausalLM.generate."""
    from transformers import LlamaForCausalLM

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[weights]
    model = LlamaForCausalLM.from_pretrained(directory, dtype=dtype).eval()

    class Stamps:
        """A generate streamer that notes when tokens are handed out: the prompt first, then each new one."""

        def __init__(self):
            self.times: list[float] = []

        def put(self, value):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    def stream(prompt: list[int], n: int, capture: bool = False):
        input_ids, streamer = torch.tensor([prompt]), Stamps()
        start = time.perf_counter()
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                             max_new_tokens=n, min_new_tokens=n, use_cache=True, pad_token_id=0, streamer=streamer)
        return start, streamer.times[1:], out[0, len(prompt):].tolist()

    return stream


def llamacpp_engine(gguf_path: Path, threads: int, n_ctx: int, plain_buffers: bool = False):
    """The same interface over llama-cpp-python, on a GGUF file (examples/llamacpp_peer.py uses it too).
    `plain_buffers`: llama.cpp's plain CPU kernels, without its repacked ("extra") weight buffers."""
    import llama_cpp
    from llama_cpp import Llama

    if plain_buffers:
        default = llama_cpp.llama_cpp.llama_model_default_params

        def without_extra_buffers():
            params = default()
            params.use_extra_bufts = False
            return params

        llama_cpp.llama_cpp.llama_model_default_params = without_extra_buffers

    llm = Llama(model_path=str(gguf_path), n_ctx=n_ctx, n_threads=threads,
                n_threads_batch=threads, n_batch=512, logits_all=False, verbose=False)

    def stream(prompt: list[int], n: int, capture: bool = False):
        llm.reset()  # else generate() reuses the cached prompt and the prefill costs nothing
        # EOS does not end generate(); top_k=1 is argmax; repeat_penalty=1 turns off a default-on penalty.
        tokens = llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0)
        stamps, out = [], []
        start = time.perf_counter()
        for token in tokens:  # the first next() evaluates the prompt
            stamps.append(time.perf_counter())
            out.append(token)
            if len(out) == n:
                break
        return start, stamps, out

    return stream


def worker(mode: str, directory: Path, new_tokens: int, prefill_tokens: int, threads: int,
           plain_buffers: bool = False) -> dict:
    """Everything measured for one config × mode; runs in a fresh process."""
    torch.set_num_threads(threads)
    engine, weights = MODES[mode]
    config = json.loads((directory / "config.json").read_text())
    result = {}
    if engine == "ours":
        stream, loaded = ours(directory, weights, plain="plain" in mode)
        result["kernels"] = loaded.kernels.describe()
        result["read_bytes"] = decode_read_bytes(loaded.model)
    elif engine == "transformers":
        stream = transformers_engine(directory, weights)
    else:
        stream = llamacpp_engine(directory / f"model-{weights}.gguf", threads, config["max_position_embeddings"],
                                 plain_buffers)
        result["plain_buffers"] = plain_buffers
    result["load_peak_rss_mb"] = peak_rss_mb()  # loading's high-water mark, before any run
    vocab_size = config["vocab_size"]
    decode_prompt = prompt_ids(DECODE_PROMPT_TOKENS, vocab_size)
    prefill_prompt = prompt_ids(prefill_tokens, vocab_size)
    busy_before = cpu_seconds()

    # Each measurement follows a warm-up: first calls pay for allocator growth and kernel selection.
    stream(decode_prompt, 8)
    _, stamps, result["tokens"] = stream(decode_prompt, new_tokens)
    result["decode_tps"] = decode_rate(stamps)
    if engine == "ours":
        # Attention capture at ATTENTION_CONTEXT positions: the same steps with and without it.
        long_prompt = prompt_ids(min(ATTENTION_CONTEXT, config["max_position_embeddings"]) - 17, vocab_size)
        stream(long_prompt, 4, capture=True)
        result["long_tps"] = decode_rate(stream(long_prompt, 16)[1])
        result["attention_tps"] = decode_rate(stream(long_prompt, 16, capture=True)[1])
    stream(prefill_prompt, 1)
    start, stamps, _ = stream(prefill_prompt, 1)
    result["prefill_ms"] = (stamps[0] - start) * 1000  # time to first token

    result["others_cpu"] = others_cpu_share(busy_before, cpu_seconds())
    result["peak_rss_mb"], result["steady_rss_mb"] = peak_rss_mb(), rss_mb()
    return result


def rss_mb() -> float:
    """This process's resident memory now (after loading and decoding: its steady size)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024  # kB


def cpu_seconds() -> tuple[float, float, float]:
    """(wall, CPU seconds of the whole machine, CPU seconds of this process), on Linux."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait; steal counts as taken
    own = os.times()
    return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def others_cpu_share(before: tuple, after: tuple) -> float:
    """Fraction of the machine's CPU time that other processes (or the hypervisor) used meanwhile."""
    wall, machine, own = (b - a for a, b in zip(before, after))
    return max(0.0, machine - own) / (wall * os.cpu_count())


def peak_rss_mb() -> float:
    """This process's peak resident memory. Not getrusage's ru_maxrss: Linux carries that across
    fork and exec, so every worker would report at least the parent's peak (weights made and all)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024  # kB


# --- the parent: weights, bandwidth, subprocesses, table -----------------------------------------


def synthetic_sentencepiece(vocab_size: int) -> bytes:
    """A serialized SentencePiece ModelProto: <unk> <s> </s>, the 256 byte pieces, then "▁t<i>".

    Random weights need no real vocabulary, but llama.cpp needs one in the GGUF and our loader
    checks one against the model: this is the smallest valid one, written field by field in
    protobuf's wire format (the protobuf package is not a dependency)."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    def field(number: int, wire: int, payload: bytes) -> bytes:
        return varint(number << 3 | wire) + payload

    def message(number: int, payload: bytes) -> bytes:
        return field(number, 2, varint(len(payload)) + payload)

    def piece(text: str, score: float, kind: int) -> bytes:  # kind: 1 normal, 2 unknown, 3 control, 6 byte
        return message(1, message(1, text.encode()) + field(2, 5, struct.pack("<f", score)) + field(3, 0, varint(kind)))

    pieces = [piece("<unk>", 0, 2), piece("<s>", 0, 3), piece("</s>", 0, 3)]
    pieces += [piece(f"<0x{b:02X}>", 0, 6) for b in range(256)]
    pieces += [piece(f"\u2581t{i}", -float(i), 1) for i in range(vocab_size - len(pieces))]
    trainer = field(3, 0, varint(2)) + field(35, 0, varint(1))  # model_type BPE, byte_fallback
    return b"".join(pieces) + message(2, trainer) + message(3, message(1, b"identity"))


def save_random_weights(preset: str, directory: Path, gguf_types: set[str]) -> None:
    """A seeded LlamaForCausalLM with the preset's shapes, written as transformers writes real ones,
    with a vocabulary beside it and the GGUF files llama.cpp reads."""
    from transformers import LlamaConfig, LlamaForCausalLM

    args = PRESETS[preset]
    config = LlamaConfig(
        vocab_size=args.vocab_size, hidden_size=args.dim, intermediate_size=args.ffn_hidden_dim,
        num_hidden_layers=args.n_layers, num_attention_heads=args.n_heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.max_seq_len, rms_norm_eps=args.norm_eps, tie_word_embeddings=args.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": args.rope_theta},
    )
    torch.manual_seed(SEED)
    LlamaForCausalLM(config).save_pretrained(directory)
    (directory / "tokenizer.model").write_bytes(synthetic_sentencepiece(args.vocab_size))
    if gguf_types:
        from llama_core.formats.gguf_export import export_gguf
        from llama_core.loading import load_checkpoint

        loaded = load_checkpoint(directory, dtype="fp32", fast_layout=False)
        for gguf_type in sorted(gguf_types & {"f32", "f16"} | ({"f16"} if gguf_types - {"f32"} else set())):
            export_gguf(loaded, directory / f"model-{gguf_type}.gguf", dtype=gguf_type)
        del loaded
        for gguf_type in sorted(gguf_types & set(LLAMACPP_FILE_TYPES)):
            llamacpp_quantize(directory / "model-f16.gguf", directory / f"model-{gguf_type}.gguf", gguf_type)


GGUF_BY_LLAMACPP = {f"gguf-{t}" for t in LLAMACPP_FILE_TYPES}  # our modes on files llama.cpp's quantizer writes


def gguf_type(mode: str) -> str | None:
    """The GGUF file a mode reads ("f16", "q4_0", ...), or None."""
    engine, weights = MODES[mode]
    if engine == "llama.cpp":
        return weights
    return weights.removeprefix("gguf-") if weights.startswith("gguf-") else None


def llamacpp_quantize(source: Path, out: Path, gguf_type: str) -> None:
    """Write `out` with llama.cpp's own quantizer, as a llama.cpp user makes a q4_0 or Q4_K_M file."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = getattr(llama_cpp, LLAMACPP_FILE_TYPES[gguf_type]), 2
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp's quantizer could not write {out.name} from {source.name}")


def read_bandwidth_gbs(threads: int) -> float:
    """Memory read bandwidth: the best of several sums over 1 GiB of fp32, with `threads` threads."""
    torch.set_num_threads(threads)
    data = torch.ones(2**28)
    data.sum()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        data.sum()
        times.append(time.perf_counter() - start)
    return data.numel() * 4 / min(times) / 1e9


def bytes_per_token(preset: str, weights: str, measured: int | None = None) -> float:
    """Weights one decode step reads: every matrix but the embedding (one row of it), at the mode's bytes
    (`measured`: as counted in the loaded model, for ours)."""
    if measured:
        return measured
    args = PRESETS[preset]
    per_layer = args.dim * args.head_dim * (2 * args.n_heads + 2 * args.kv_heads) + 3 * args.dim * args.ffn_hidden_dim
    matrices = args.n_layers * per_layer + args.vocab_size * args.dim  # + the output head (tied or not)
    return matrices * BYTES_PER_WEIGHT[weights]


def run_worker(mode: str, directory: Path, args: argparse.Namespace, prefill_tokens: int) -> dict:
    command = [sys.executable, __file__, "--worker", mode, "--weights", str(directory), "--threads",
               str(args.threads), "--new-tokens", str(args.new_tokens), "--prompt-tokens", str(prefill_tokens)]
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if MODES[mode][0] == "llama.cpp"
                          else None, text=True)  # llama.cpp's own log is long; ours passes through
    if done.returncode != 0 and MODES[mode][0] == "llama.cpp":
        log(f"{mode}: llama.cpp's worker died (exit {done.returncode}); again with its plain CPU buffers")
        done = subprocess.run([*command, "--plain-buffers"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} worker failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def best(runs: list[dict]) -> dict:
    """Fastest of each mode's rounds: other work on the machine can only slow a run down."""
    result = dict(runs[0])
    for key, pick in (("decode_tps", max), ("attention_tps", max), ("long_tps", max), ("prefill_ms", min),
                      ("peak_rss_mb", max), ("steady_rss_mb", max), ("load_peak_rss_mb", max)):
        if key in result:
            result[key] = pick(run[key] for run in runs)
    result["others_cpu"] = [run["others_cpu"] for run in runs]
    return result


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Where two greedy runs part; None when they agree throughout."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def print_table(results: dict, bandwidth: float, args: argparse.Namespace, skipped: list[str]) -> None:
    print(machine_line(args.threads) + "\n")
    header = ["config", "mode", "decode tok/s", "vs peer 1", "vs peer 2", "% of bandwidth limit", "prefill ms",
              "prefill vs transformers", "attention capture cost", "peak RSS MB", "steady RSS MB",
              "load peak ÷ steady", "greedy = ours fp32"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for (config, mode), r in results.items():
        peers = [(p, results.get((config, p))) for p in PEERS.get(mode, ())]
        ratios = [f"{r['decode_tps'] / p['decode_tps']:.2f}× {name}" if p else "–" for name, p in peers]
        ratios += ["–"] * (2 - len(ratios))
        limit = bandwidth * 1e9 / bytes_per_token(config, MODES[mode][1], r.get("read_bytes"))
        sixteen = MODES[mode][1] in ("bf16", "f16", "fp16", "gguf-f16")
        transformers = results.get((config, "transformers-" + ("bf16" if sixteen else "fp32")))
        prefill = f"{transformers['prefill_ms'] / r['prefill_ms']:.2f}×" if transformers else "–"
        capture = f"{r['long_tps'] / r['attention_tps']:.2f}×" if "attention_tps" in r else "–"
        reference = results.get((config, "ours-fp32"))
        diff = first_difference(r["tokens"], reference["tokens"]) if reference else None
        same = "–" if reference is None else ("yes" if diff is None else f"no (from token {diff})")
        print("| " + " | ".join([CONFIGS[config], mode, f"{r['decode_tps']:.1f}", *ratios,
                                 f"{r['decode_tps'] / limit:.0%}", f"{r['prefill_ms']:.0f}", prefill, capture,
                                 f"{r['peak_rss_mb']:.0f}", f"{r['steady_rss_mb']:.0f}",
                                 f"{r['load_peak_rss_mb'] / r['steady_rss_mb']:.2f}", same]) + " |")
    print(f"\nDecode: greedy, {args.new_tokens} new tokens after a {DECODE_PROMPT_TOKENS}-token prompt, from the "
          f"median gap between tokens as the consumer receives them. Prefill: time to the first token of a "
          f"{args.prompt_tokens}-token prompt (at most the context − 1: 255 for stories15M). \"vs\": decode speed ratio, > 1 means ours is "
          f"faster. Attention capture cost: decode time with capture on ÷ off, at {ATTENTION_CONTEXT} positions of "
          f"context. Bandwidth limit: measured read bandwidth {bandwidth:.1f} GB/s ÷ weight bytes per token. "
          f"Each after a warm-up; best of {args.rounds} alternating rounds. Torch threads (and llama.cpp threads): "
          f"{args.threads}; torch {torch.__version__}; {os.cpu_count()} CPUs. Peak RSS (VmHWM) counts imports, "
          "loading and the runs (a 512-token prefill, attention capture); steady RSS is after the runs; load peak "
          "÷ steady is the high-water mark when loading has finished over the steady size (imports in both).")
    busy = sorted({f"{share:.0%}" for r in results.values() for share in r["others_cpu"]})
    print(f"Other processes took {', '.join(busy)} of the CPU during the rounds.")
    for note in skipped:
        print(f"- {note}")
    kernels = {mode: r["kernels"] for (config, mode), r in results.items() if "kernels" in r}
    for mode, line in kernels.items():  # the last config's: the choice is the same for each
        print(f"- {mode}: {line}")
    plain = sorted({mode for (config, mode), r in results.items() if r.get("plain_buffers")})
    if plain:
        print(f"- {', '.join(plain)}: llama.cpp's repacked CPU buffers crashed, so its plain CPU kernels ran")


def machine_line(threads: int) -> str:
    """The CPU, PyTorch's kernel capability, the kernel probe's GB/s and what dtype="auto" makes of 16-bit weights."""
    from llama_core.kernels.dtype_choice import choose_dtype
    from llama_core.kernels.probe import cpu_model, probe_kernels

    speeds = probe_kernels(threads)
    choices = "; ".join(f"{name} checkpoint → {choose_dtype(dtype, None, speeds, True, lambda: True)[1]}"
                        for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)))
    return (f"Machine: {cpu_model()}, PyTorch kernels {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} "
            f"CPUs. Kernel probe (1×2048 by 5632×2048): {speeds.summary()}. dtype=\"auto\": {choices}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=DEFAULT_MODES)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=512, help="prefill prompt length (capped by context)")
    parser.add_argument("--threads", type=int, default=2, help="threads, the same for every engine")
    parser.add_argument("--rounds", type=int, default=2, help="times each mode runs, taking turns; best counts")
    parser.add_argument("--quick", action="store_true", help="stories15M only, 32 new tokens, 64-token prefill")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--plain-buffers", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker, args.weights, args.new_tokens, args.prompt_tokens, args.threads,
                                args.plain_buffers)))
        return
    if args.quick:
        args.configs, args.new_tokens, args.prompt_tokens = ["stories15m"], 32, 64
    skipped = []
    if find_spec("llama_cpp") is None:
        skipped.append("llama.cpp rows and our rows on its files skipped: llama-cpp-python is not installed "
                       "(pip install -r requirements-dev.txt)")
        args.modes = [m for m in args.modes if MODES[m][0] != "llama.cpp" and MODES[m][1] not in GGUF_BY_LLAMACPP]

    bandwidth = read_bandwidth_gbs(args.threads)
    log(f"memory read bandwidth {bandwidth:.1f} GB/s with {args.threads} threads")
    results = {}
    for config in args.configs:
        # The prompt plus the one generated token must fit the context (256 for stories15M).
        prefill_tokens = min(args.prompt_tokens, PRESETS[config].max_seq_len - 1)
        with tempfile.TemporaryDirectory(prefix=f"bench-{config}-") as directory:
            log(f"{config}: making seeded random weights")
            save_random_weights(config, Path(directory), {gguf_type(m) for m in args.modes} - {None})
            runs = {mode: [] for mode in args.modes}
            for round_ in range(args.rounds):
                for mode in args.modes:
                    run = run_worker(mode, Path(directory), args, prefill_tokens)
                    runs[mode].append(run)
                    log(f"{config} {mode} round {round_ + 1}: decode {run['decode_tps']:.1f} tok/s, "
                        f"prefill {run['prefill_ms']:.0f} ms, others took {run['others_cpu']:.0%} of the CPU")
            for mode in args.modes:
                results[(config, mode)] = best(runs[mode])
    # Measured again at the end: other work during the first reading would understate the limit.
    bandwidth = max(bandwidth, read_bandwidth_gbs(args.threads))
    print_table(results, bandwidth, args, skipped)


if __name__ == "__main__":
    main()
