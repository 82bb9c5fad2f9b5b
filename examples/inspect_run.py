"""Generate once with attention capture and save what the playground draws, as files that work offline.

    python examples/inspect_run.py --prompt "In the beginning" --max-new-tokens 30
    python examples/inspect_run.py --layer 2 --head 1 --step 5 --out /tmp/run

Writes into --out (default inspect-output/): tokens.html (the text, each token coloured by its
probability), attention.html (one layer, one head or the mean over heads), probability.html
(confidence and entropy across the run), alternatives.html (what the model weighed at --step)
and run.json (settings, timings and every token with its alternatives). Each chart carries its
own copy of plotly.js, so it opens without a network.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from _bundled import largest_bundled_model  # noqa: E402
from llama_core import (  # noqa: E402
    CheckpointError, ParameterError, SamplingParams, TokenizerError, generate_stream, load_checkpoint,
)
from llama_core.insight.run_figures import (  # noqa: E402
    alternatives_figure, attention_figure, probability_entropy_figure, token_html,
)
from llama_core.insight.run_record import RunRecord  # noqa: E402


def head_choice(value: str) -> int | None:
    """--head: a head number, or "mean" (None) to average the layer's heads."""
    return None if value == "mean" else int(value)


def build_parser() -> argparse.ArgumentParser:
    default_model = largest_bundled_model()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=default_model, required=default_model is None,
                        help=f"checkpoint directory or file, or a Hugging Face repo id (default: {default_model})")
    parser.add_argument("--prompt", default="In the beginning")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=0.95, help="1 = off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=30)
    parser.add_argument("--layer", type=int, default=0, help="layer of the attention heatmap")
    parser.add_argument("--head", type=head_choice, default=None, help="a head number, or 'mean' (default)")
    parser.add_argument("--step", type=int, default=0, help="generated token whose alternatives are charted")
    parser.add_argument("--out", type=Path, default=Path("inspect-output"))
    return parser


def write_page(path: Path, title: str, body: str) -> None:
    path.write_text(f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>\n'
                    f"<body>\n{body}\n</body></html>\n", encoding="utf-8")


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    try:
        params = SamplingParams(temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                                max_new_tokens=args.max_new_tokens)
        loaded = load_checkpoint(args.model)
        if loaded.tokenizer is None:
            raise TokenizerError(f"no tokenizer next to {loaded.path} (tokenizer.model, tokenizer.json or a llama2.c tokenizer.bin)")
        if not 0 <= args.layer < loaded.args.n_layers:
            raise ParameterError("--layer", f"a layer in [0, {loaded.args.n_layers - 1}]", args.layer)
        if args.head is not None and not 0 <= args.head < loaded.args.n_heads:
            raise ParameterError("--head", f"'mean' or a head in [0, {loaded.args.n_heads - 1}]", args.head)
        prompt_ids = loaded.tokenizer.encode(args.prompt, bos=True)
        name = (loaded.model_card or {}).get("name", str(args.model))
        record = RunRecord.start(name, loaded.tokenizer, args.prompt, prompt_ids, dataclasses.asdict(params))
        for step in generate_stream(loaded.model, loaded.tokenizer, prompt_ids, params, capture_attention=True,
                                    eos_ids=loaded.eos_ids):
            record.add(step)
        if not 0 <= args.step < len(record.steps):
            raise ParameterError("--step", f"a generated token in [0, {len(record.steps) - 1}]", args.step)
    except (CheckpointError, ParameterError, TokenizerError) as error:
        parser.exit(2, f"error: {error}\n")

    args.out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(filename: str, figure) -> None:
        figure.write_html(args.out / filename, include_plotlyjs=True)  # plotly.js inline: no CDN needed
        written.append(filename)

    write_page(args.out / "tokens.html", "Tokens by probability", token_html(record))
    written.append("tokens.html")
    matrix = record.attention_matrix()
    if matrix is None:  # the prompt was too long for the attention budget
        print("no attention was captured (prompt too long); skipping attention.html", file=sys.stderr)
    else:
        save("attention.html", attention_figure(matrix, record.all_pieces(), args.layer, args.head))
    save("probability.html", probability_entropy_figure(record))
    save("alternatives.html", alternatives_figure(record, args.step))
    (args.out / "run.json").write_text(json.dumps(record.to_dict(), indent=2, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    written.append("run.json")

    print(args.prompt + record.text)
    print(f"wrote {', '.join(written)} to {args.out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
