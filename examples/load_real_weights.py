"""Load real LLaMA weights, say what was loaded, and complete a prompt greedily.

Any format load_checkpoint reads, told apart by the files present:

    python examples/load_real_weights.py --model models/playground-16m            # Hugging Face directory
    python examples/load_real_weights.py --model ~/llama/llama-2-7b --dtype bf16   # Meta consolidated.NN.pth
    python examples/load_real_weights.py --model ~/llama2.c/stories15M.bin         # llama2.c, tokenizer.bin beside
    python examples/load_real_weights.py --model TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T --dtype bf16

A Hub id is fetched once into the Hugging Face cache (HF_HOME); with HF_HUB_OFFLINE=1 only the
cache is read. For a model larger than memory, let accelerate spread it over CPU and disk:

    python examples/load_real_weights.py --model meta-llama/Llama-2-13b-hf --dtype bf16 \
        --device-map auto --max-cpu-memory 8GiB --offload-dir offload/

A checkpoint that cannot be found or read ends with one line saying why, and exit status 2.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from _bundled import largest_bundled_model  # noqa: E402
from llama_core import (  # noqa: E402
    CheckpointError, LoadedModel, ParameterError, SamplingParams, TokenizerError, generate_stream, load_checkpoint,
)


def build_parser() -> argparse.ArgumentParser:
    default_model = largest_bundled_model()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=default_model, required=default_model is None,
                        help=f"local directory or file, or a Hub repo id 'org/name' (default: {default_model})")
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="auto keeps the checkpoint's own dtype")
    parser.add_argument("--device-map", default=None,
                        help="'auto' to spread the model over the GPU, CPU and disk, or one device such as cuda:0")
    parser.add_argument("--max-cpu-memory", default=None,
                        help="with --device-map auto: e.g. 8GiB; what does not fit goes to disk")
    parser.add_argument("--offload-dir", default=None, help="where layers offloaded to disk are kept")
    parser.add_argument("--prompt", default="In the beginning")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    return parser


def _binary_size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def describe(loaded: LoadedModel) -> dict:
    """What `python -m llama_core info` shows, minus the full config."""
    a = loaded.args
    description = {
        "source": loaded.source,
        "path": str(loaded.path),
        "format": loaded.format,
        "shape": f"dim {a.dim}, {a.n_layers} layers, {a.n_heads} heads ({a.kv_heads} key/value), "
                 f"vocab {a.vocab_size}, context {a.max_seq_len}",
        "parameters": f"{loaded.n_params:,}",
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "bytes": f"{loaded.n_bytes:,} ({_binary_size(loaded.n_bytes)})",
        "tokenizer": str(loaded.tokenizer.path) if loaded.tokenizer else "none found",
    }
    placement = getattr(loaded.model, "hf_device_map", None)  # set by accelerate when dispatched
    if placement:
        counts = collections.Counter(str(device) for device in placement.values())
        description["placement"] = ", ".join(f"{n} module(s) on {device}" for device, n in counts.items())
    if loaded.model_card:
        description["model card"] = f"{loaded.model_card.get('name')}: val loss {loaded.model_card.get('val_loss')}"
    return description


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    max_memory = {"cpu": args.max_cpu_memory} if args.max_cpu_memory else None
    try:
        params = SamplingParams(temperature=0, max_new_tokens=args.max_new_tokens)
        loaded = load_checkpoint(args.model, dtype=args.dtype, device_map=args.device_map, max_memory=max_memory,
                                 offload_dir=args.offload_dir)
        for key, value in describe(loaded).items():
            print(f"{key:>11}: {value}")
        if loaded.tokenizer is None:
            print("\nno tokenizer beside the weights, so no completion; put the model's tokenizer.model, tokenizer.json or tokenizer.bin there")
            return 0
        print(f"\ngreedy: {args.prompt}", end="", flush=True)
        for step in generate_stream(loaded.model, loaded.tokenizer, args.prompt, params, eos_ids=loaded.eos_ids):
            print(step.text, end="", flush=True)
        print()
    except (CheckpointError, ParameterError, TokenizerError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
