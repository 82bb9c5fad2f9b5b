"""Decode speed, prefill time and peak memory of llama_core against transformers, on the same weights.

    python examples/benchmark.py            # stories15M, stories110M, TinyLlama-1.1B × fp32, bf16 (~30-40 min)
    python examples/benchmark.py --quick    # stories15M only, few tokens: a smoke run

Each config's weights are made once (a seeded transformers LlamaForCausalLM written with
save_pretrained) and loaded by both engines. Every engine × config × dtype runs in its own
subprocess, so each peak RSS belongs to one engine alone. The table goes to stdout, progress
to stderr.

Other work on the machine slows both engines, so they take turns, `--rounds` times, each keeping
its best numbers, and the footnote says how much CPU other processes took meanwhile. If that is
much, two threads on two cores collapse (every op waits at a barrier for a descheduled thread):
compare with `--threads 1` instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from llama_core.config import PRESETS  # noqa: E402

CONFIGS = {"stories15m": "stories15M", "stories110m": "stories110M", "tinyllama-1.1b": "TinyLlama-1.1B"}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
ENGINES = ("ours", "transformers")
DECODE_PROMPT_TOKENS = 8
SEED = 0


def log(message: str) -> None:
    print(f"[benchmark] {message}", file=sys.stderr, flush=True)


def prompt_ids(length: int, vocab_size: int) -> list[int]:
    # Ids from 3 up skip <unk>, <s>, </s>: random weights need no real text, only the same ids in both engines.
    generator = torch.Generator().manual_seed(SEED)
    return torch.randint(3, vocab_size, (length,), generator=generator).tolist()


def decode_rate(stamps: list[float]) -> float:
    """Tokens per second from the median gap between tokens: the first token's wait is prefill,
    measured on its own, and a median shrugs off short moments when others take our cores."""
    return 1 / statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


# --- the two engines, each in its own subprocess --------------------------------------------------


class IdTokenizer:
    """Just enough of llama_core's Tokenizer for id prompts: generate_stream checks ids against
    `vocab_size`, stops at `eos_id`, and asks `piece`/`decode` for the text of each record."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.bos_id = 1
        self.eos_id = -1  # never generated: every run makes exactly the tokens asked for, as min_new_tokens does

    def piece(self, token_id: int) -> str:
        return f"<{token_id}>"

    def decode(self, ids: list[int]) -> str:
        return "".join(map(self.piece, ids))


def ours(directory: Path, dtype: torch.dtype):
    """A `stream(prompt, n, capture)` function over llama_core's real streaming path."""
    from llama_core.generation import generate_stream
    from llama_core.loading import load_checkpoint
    from llama_core.sampling import SamplingParams

    loaded = load_checkpoint(directory, dtype=dtype)
    tokenizer = IdTokenizer(loaded.args.vocab_size)  # save_pretrained wrote no tokenizer.model

    def stream(prompt: list[int], n: int, capture: bool = False):
        params = SamplingParams(temperature=0.0, max_new_tokens=n)
        stamps, tokens = [], []
        start = time.perf_counter()
        for record in generate_stream(loaded.model, tokenizer, prompt, params, capture_attention=capture):
            stamps.append(time.perf_counter())  # when the consumer sees the token, records and all
            tokens.append(record.token_id)
        return start, stamps, tokens

    return stream


def transformers_engine(directory: Path, dtype: torch.dtype):
    """The same `stream` interface over LlamaForCausalLM.generate."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(directory, dtype=dtype).eval()

    class Stamps:
        """A generate streamer that notes when tokens are handed out: the prompt first, then each new one."""

        def __init__(self):
            self.times: list[float] = []

        def put(self, value):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    def stream(prompt: list[int], n: int):
        input_ids, streamer = torch.tensor([prompt]), Stamps()
        start = time.perf_counter()
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                             max_new_tokens=n, min_new_tokens=n, use_cache=True, pad_token_id=0, streamer=streamer)
        return start, streamer.times[1:], out[0, len(prompt):].tolist()

    return stream


def worker(engine: str, directory: Path, dtype: str, new_tokens: int, prefill_tokens: int, threads: int) -> dict:
    """Everything measured for one engine × config × dtype; runs in a fresh process."""
    torch.set_num_threads(threads)
    stream = (ours if engine == "ours" else transformers_engine)(directory, DTYPES[dtype])
    vocab_size = json.loads((directory / "config.json").read_text())["vocab_size"]
    decode_prompt = prompt_ids(DECODE_PROMPT_TOKENS, vocab_size)
    prefill_prompt = prompt_ids(prefill_tokens, vocab_size)
    busy_before = cpu_seconds()
    result = {}

    # Each measurement follows a warm-up: first calls pay for allocator growth and kernel selection.
    stream(decode_prompt, 8)
    _, stamps, result["tokens"] = stream(decode_prompt, new_tokens)
    result["decode_tps"] = decode_rate(stamps)
    if engine == "ours":
        stream(decode_prompt, 8, capture=True)
        result["attention_tps"] = decode_rate(stream(decode_prompt, new_tokens, capture=True)[1])
    stream(prefill_prompt, 1)
    start, stamps, _ = stream(prefill_prompt, 1)
    result["prefill_ms"] = (stamps[0] - start) * 1000  # time to first token

    result["others_cpu"] = others_cpu_share(busy_before, cpu_seconds())
    result["peak_rss_mb"] = peak_rss_mb()
    return result


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


# --- the parent: weights, subprocesses, table ---------------------------------------------------


def save_random_weights(preset: str, directory: Path) -> None:
    """A seeded LlamaForCausalLM with the preset's shapes, written as transformers writes real ones."""
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


def run_worker(engine: str, directory: Path, dtype: str, args: argparse.Namespace, prefill_tokens: int) -> dict:
    command = [sys.executable, __file__, "--worker", engine, "--weights", str(directory), "--dtypes", dtype,
               "--threads", str(args.threads), "--new-tokens", str(args.new_tokens),
               "--prompt-tokens", str(prefill_tokens)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)  # stderr passes through
    return json.loads(done.stdout.strip().splitlines()[-1])


def best(runs: list[dict]) -> dict:
    """Fastest of each engine's rounds: other work on the machine can only slow a run down."""
    result = dict(runs[0])
    for key, pick in (("decode_tps", max), ("attention_tps", max), ("prefill_ms", min), ("peak_rss_mb", max)):
        if key in result:
            result[key] = pick(run[key] for run in runs)
    result["others_cpu"] = [run["others_cpu"] for run in runs]
    return result


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Where two greedy runs of the same length part; None when they agree throughout."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def print_table(rows: list[tuple[str, str, int, dict, dict]], args: argparse.Namespace) -> None:
    header = ["config", "dtype", "ours decode tok/s", "transformers decode tok/s", "ratio", "ours+attention tok/s",
              "prefill tokens", "ours prefill ms", "transformers prefill ms", "ratio", "ours peak RSS MB",
              "transformers peak RSS MB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for config, dtype, prefill_tokens, a, b in rows:
        cells = [CONFIGS[config], dtype, f"{a['decode_tps']:.1f}", f"{b['decode_tps']:.1f}",
                 f"{a['decode_tps'] / b['decode_tps']:.2f}×", f"{a['attention_tps']:.1f}", str(prefill_tokens),
                 f"{a['prefill_ms']:.0f}", f"{b['prefill_ms']:.0f}", f"{b['prefill_ms'] / a['prefill_ms']:.2f}×",
                 f"{a['peak_rss_mb']:.0f}", f"{b['peak_rss_mb']:.0f}"]
        print("| " + " | ".join(cells) + " |")
    print(f"\nDecode: greedy, {args.new_tokens} new tokens after a {DECODE_PROMPT_TOKENS}-token prompt, from the "
          f"median gap between tokens as the consumer receives them. Prefill: time to the first token. Each after "
          f"a warm-up; best of {args.rounds} alternating rounds. Ratio > 1: ours is faster. Torch threads: "
          f"{args.threads}, torch {torch.__version__}, {os.cpu_count()} CPUs. Peak RSS (VmHWM) counts imports and "
          "loading.\n")
    for config, dtype, _, a, b in rows:
        diff = first_difference(a["tokens"], b["tokens"])
        same = "yes" if diff is None else f"no, first difference at token {diff}"
        if dtype != "fp32":
            same += " (bf16 rounding may legitimately diverge)"
        busy = "; ".join(f"{name} " + ", ".join(f"{share:.0%}" for share in run["others_cpu"])
                         for name, run in (("ours", a), ("transformers", b)))
        print(f"- {CONFIGS[config]} {dtype}: greedy tokens match: {same}; CPU other processes took, by round: {busy}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=512, help="prefill prompt length (capped by context)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, the same for both engines")
    parser.add_argument("--rounds", type=int, default=2, help="times each engine runs, taking turns; best counts")
    parser.add_argument("--quick", action="store_true", help="stories15M only, 32 new tokens, 64-token prefill")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = worker(args.worker, args.weights, args.dtypes[0], args.new_tokens, args.prompt_tokens, args.threads)
        print(json.dumps(result))
        return
    if args.quick:
        args.configs, args.new_tokens, args.prompt_tokens = ["stories15m"], 32, 64

    rows = []
    for config in args.configs:
        # The prompt plus the one generated token must fit the context (256 for stories15M).
        prefill_tokens = min(args.prompt_tokens, PRESETS[config].max_seq_len - 1)
        with tempfile.TemporaryDirectory(prefix=f"bench-{config}-") as directory:
            log(f"{config}: making seeded random weights")
            save_random_weights(config, Path(directory))
            for dtype in args.dtypes:
                runs = {engine: [] for engine in ENGINES}
                for round_ in range(args.rounds):
                    for engine in ENGINES:
                        run = run_worker(engine, Path(directory), dtype, args, prefill_tokens)
                        runs[engine].append(run)
                        log(f"{config} {dtype} {engine} round {round_ + 1}: decode {run['decode_tps']:.1f} tok/s, "
                            f"prefill {run['prefill_ms']:.0f} ms, others took {run['others_cpu']:.0%} of the CPU")
                rows.append((config, dtype, prefill_tokens, best(runs["ours"]), best(runs["transformers"])))
    print_table(rows, args)


if __name__ == "__main__":
    main()
