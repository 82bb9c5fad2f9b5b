"""Stream a completion to stdout with the public llama_core API, then report the speed.

    python examples/stream_completion.py --prompt "In the beginning"
    python examples/stream_completion.py --prompt "The Python interpreter" --temperature 0 --max-new-tokens 40
    python examples/stream_completion.py --model TinyLlama/TinyLlama-1.1B-Chat-v1.0 --template llama-2-chat \
        --prompt "Name three rivers."

--model defaults to the largest model bundled in models/. The text goes to stdout as it is
generated; the token count, speed and seed (to repeat a sampled run) go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from _bundled import largest_bundled_model  # noqa: E402
from llama_core import (  # noqa: E402
    TEMPLATES, CheckpointError, ParameterError, SamplingParams, TokenizerError, apply_template, generate_stream,
    load_checkpoint,
)


def build_parser() -> argparse.ArgumentParser:
    default_model = largest_bundled_model()
    defaults = SamplingParams()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=default_model, required=default_model is None,
                        help=f"checkpoint directory or file, or a Hugging Face repo id (default: {default_model})")
    parser.add_argument("--prompt", default="In the beginning")
    parser.add_argument("--template", default="plain", choices=list(TEMPLATES))
    parser.add_argument("--temperature", type=float, default=defaults.temperature, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=defaults.top_p, help="1 = off")
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed at the end)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    try:
        params = SamplingParams(temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                                max_new_tokens=args.max_new_tokens)  # checked before the (slower) load
        loaded = load_checkpoint(args.model)
        if loaded.tokenizer is None:
            raise TokenizerError(f"no tokenizer next to {loaded.path} (tokenizer.model, tokenizer.json or a llama2.c tokenizer.bin)")
        prompt = apply_template(args.template, args.prompt)
        print(prompt, end="", flush=True)
        steps = []
        for step in generate_stream(loaded.model, loaded.tokenizer, prompt, params, eos_ids=loaded.eos_ids):
            print(step.text, end="", flush=True)
            steps.append(step)
    except (CheckpointError, ParameterError, TokenizerError) as error:
        parser.exit(2, f"error: {error}\n")
    print()

    first, last = steps[0], steps[-1]
    # The first token waits for the whole prompt (prefill); the decode rate counts the tokens after it.
    decode = (len(steps) - 1) / (last.elapsed_s - first.elapsed_s) if len(steps) > 1 else float("nan")
    print(f"[{len(steps)} tokens in {last.elapsed_s:.2f} s: first after {first.elapsed_s * 1000:.0f} ms, "
          f"then {decode:.1f} tokens/s; stop: {last.stop_reason.value}; seed {last.seed}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
