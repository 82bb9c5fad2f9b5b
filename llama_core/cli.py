"""Command line: `python -m llama_core generate | info | corpus | train | export-run | scaling-grid | export-gguf`."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .config import parameter_count
from .errors import CheckpointError, ParameterError, TokenizerError
from .generation import GenerationError, StopReason, generate_stream
from .kernels.quantized_model import QUANTIZE_CHOICES
from .sampling import SamplingParams
from .templates import TEMPLATES, apply_template

USER_ERRORS = (ParameterError, CheckpointError, TokenizerError, GenerationError)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint directory or file, or a Hugging Face repo id")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--device-map", default=None,
                        help="'auto' to spread a model larger than memory over CPU and disk with accelerate")
    parser.add_argument("--offload-dir", default=None, help="where layers offloaded to disk are kept")
    parser.add_argument("--quantize", default=None, choices=QUANTIZE_CHOICES,
                        help="weight-only int8 or int4 projections for faster CPU decode; int4-gN: N inputs per "
                             "scale (int4 = int4-g32). Default: a GGUF file's quantized tensors stay quantized")
    parser.add_argument("--context", type=int, default=None,
                        help="context length to run with (≥ 16; default: the checkpoint's own)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llama_core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="stream a completion")
    _add_model_arguments(generate)
    generate.add_argument("--prompt", required=True)
    generate.add_argument("--template", default="plain", choices=list(TEMPLATES))
    generate.add_argument("--system", default="", help="system prompt (llama-2-chat template)")
    defaults = SamplingParams()
    # None = not given: the model's generation_config.json value if it has one, else ours (shown in --help).
    model_default = "the model's generation_config.json value, else"
    generate.add_argument("--temperature", type=float, default=None,
                          help=f"0 = greedy (default: {model_default} {defaults.temperature})")
    generate.add_argument("--top-k", type=int, default=None, help=f"0 = off (default: {model_default} {defaults.top_k})")
    generate.add_argument("--top-p", type=float, default=None, help=f"1 = off (default: {model_default} {defaults.top_p})")
    generate.add_argument("--min-p", type=float, default=defaults.min_p, help="0 = off")
    generate.add_argument("--repetition-penalty", type=float, default=None,
                          help=f"1 = off (default: {model_default} {defaults.repetition_penalty})")
    generate.add_argument("--presence-penalty", type=float, default=defaults.presence_penalty)
    generate.add_argument("--frequency-penalty", type=float, default=defaults.frequency_penalty)
    generate.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    generate.add_argument("--seed", type=int, default=None, help="default: random (reported with --json)")
    generate.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable)")
    generate.add_argument("--top-n", type=int, default=5, help="alternatives per token in --json output")
    generate.add_argument("--json", action="store_true", help="one JSON object per generated token")
    generate.add_argument("--compile-decode", action="store_true",
                          help="compile the decode step with torch.compile first (10-60 s; pays on small models, "
                               "see README, Speed)")

    info = commands.add_parser("info", help="describe a checkpoint")
    _add_model_arguments(info)
    info.add_argument("--json", action="store_true")

    corpus = commands.add_parser("corpus", help="build the training corpus from installed Debian docs")
    corpus.add_argument("--out", default="data/corpus")
    corpus.add_argument("--tokenizer", default=None, help="reuse this tokenizer.model instead of training one")
    corpus.add_argument("--vocab-size", type=int, default=4096)

    train = commands.add_parser("train", help="pretrain a model on a corpus (resumes if --out has a checkpoint)")
    train.add_argument("--data", default="data/corpus", help="directory with train.bin / val.bin")
    train.add_argument("--out", required=True)
    for flag, default in (("--dim", 256), ("--n-layers", 6), ("--n-heads", 8), ("--vocab-size", 4096),
                          ("--max-seq-len", 256), ("--batch-size", 16), ("--grad-accum", 1),
                          ("--warmup-steps", 50), ("--eval-every", 100), ("--checkpoint-every", 50), ("--seed", 0)):
        train.add_argument(flag, type=int, default=default)
    train.add_argument("--n-kv-heads", type=int, default=None)
    train.add_argument("--tokens", type=float, required=True, help="training budget in tokens, e.g. 2e6")
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument("--bf16", action="store_true", help="bf16 autocast (pays only on CPUs with bf16 matmuls)")
    train.add_argument("--threads", type=int, default=None)
    train.add_argument("--device", default="cpu", help="cpu or cuda; a run may resume on another device")

    export = commands.add_parser("export-run", help="ship a finished training run with a model card")
    export.add_argument("--run", required=True)
    export.add_argument("--tokenizer", required=True)
    export.add_argument("--out", required=True)
    export.add_argument("--name", required=True)

    grid = commands.add_parser("scaling-grid", help="run the IsoFLOP grid and fit the compute-optimal frontier")
    grid.add_argument("--data", default="data/corpus")
    grid.add_argument("--runs", default="runs/isoflop")
    grid.add_argument("--results", default="data/isoflop_results.json")
    grid.add_argument("--fit-only", action="store_true", help="only refit an existing results file")
    grid.add_argument("--collect-only", action="store_true", help="write results of the finished runs, train none")
    grid.add_argument("--threads", type=int, default=None)
    grid.add_argument("--device", default="cpu", help="cpu or cuda")
    grid.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                      help="merge these results files into --results (later files win), then fit")
    grid.add_argument("--budgets", type=float, nargs="+", default=None,
                      help="run only these budgets of the grid (e.g. 2e13 6e13), to split it across processes")

    gguf = commands.add_parser("export-gguf", help="write a checkpoint as one GGUF file for llama.cpp, Ollama, LM Studio")
    gguf.add_argument("--model", required=True, help="checkpoint directory or file, or a Hugging Face repo id")
    gguf.add_argument("--out", required=True, help="the .gguf file to write")
    gguf.add_argument("--dtype", default="f32", choices=["f32", "f16", "q8_0"], help="type of the weight matrices")
    return parser


def _load(args):
    from .loading import load_checkpoint  # deferred: `--help` should not wait for torch to load weights

    return load_checkpoint(args.model, dtype=args.dtype, device_map=args.device_map, offload_dir=args.offload_dir,
                           quantize=args.quantize, context_length=args.context)


MODEL_DEFAULTED = ("temperature", "top_k", "top_p", "repetition_penalty")  # flags a generation_config may set


def sampling_params(args, model_defaults: dict) -> tuple[SamplingParams, dict]:
    """The run's SamplingParams: flags given win, then the model's own defaults, then ours; and which of the
    values came from the model."""
    given = {name: getattr(args, name) for name in MODEL_DEFAULTED if getattr(args, name) is not None}
    from_model = {k: v for k, v in model_defaults.items() if k in MODEL_DEFAULTED and k not in given}
    params = SamplingParams(
        **from_model, **given, min_p=args.min_p, presence_penalty=args.presence_penalty,
        frequency_penalty=args.frequency_penalty, max_new_tokens=args.max_new_tokens, seed=args.seed,
        stop=tuple(args.stop),
    )
    return params, from_model


def run_generate(args) -> int:
    sampling_params(args, {})  # the flags are validated before the (slow) load
    loaded = _load(args)
    if loaded.tokenizer is None:
        raise TokenizerError(f"no tokenizer.model, tokenizer.json or llama2.c tokenizer.bin found next to "
                             f"{loaded.path}; put the model's tokenizer files there")
    params, from_model = sampling_params(args, loaded.generation_defaults)
    if from_model:
        shown = ", ".join(f"{k} {v}" for k, v in from_model.items())
        print(f"[model defaults from generation_config.json: {shown}; flags override them]", file=sys.stderr)
    prompt = apply_template(args.template, args.prompt, args.system)
    if args.compile_decode:
        _compile_decode(loaded.model)
    stream = generate_stream(loaded.model, loaded.tokenizer, prompt, params, top_n=args.top_n,
                             eos_ids=loaded.eos_ids, compile_decode=args.compile_decode)
    last = None
    try:
        for last in stream:
            if args.json:
                print(json.dumps(_token_json(last), ensure_ascii=False), flush=True)
            else:
                print(last.text, end="", flush=True)
    except KeyboardInterrupt:
        stream.close()
        if args.json:
            print(json.dumps({"stop_reason": StopReason.CANCELLED.value}), flush=True)
        print(file=sys.stderr)
        return 130
    if not args.json:
        print()
        if last is not None:
            rate = (last.index + 1) / last.elapsed_s if last.elapsed_s else float("inf")
            print(f"[{last.index + 1} tokens, {rate:.1f} tokens/s, stop: {last.stop_reason.value}, seed {last.seed}]",
                  file=sys.stderr)
    return 0


def _compile_decode(model) -> None:
    """Compile the model's decode step before generating (the app compiles in the background instead)."""
    from .kernels.compiled_decode import compiled_decoder

    decoder = compiled_decoder(model)
    if decoder is None:
        print("[--compile-decode: this model decodes eagerly (dynamic RoPE or a device map)]", file=sys.stderr)
        return
    decoder.start()
    state = decoder.wait()
    detail = f"in {decoder.seconds:.0f} s" if state == "ready" else f"failed, decoding eagerly: {decoder.error}"
    print(f"[decode step compiled {detail}]" if state == "ready" else f"[decode step {detail}]", file=sys.stderr)


def _token_json(record) -> dict:
    entry = {
        "token_id": record.token_id, "text": record.text, "piece": record.piece, "logprob": record.logprob,
        "top": [[a.token_id, a.piece, a.prob] for a in record.top],
    }
    if record.stop_reason is not None:
        entry["stop_reason"] = record.stop_reason.value
        entry["seed"] = record.seed
    return entry


def run_info(args) -> int:
    loaded = _load(args)
    description = {
        "source": loaded.source,
        "path": str(loaded.path),
        "format": loaded.format,
        "config": loaded.args.to_dict(),
        "parameters": parameter_count(loaded.args),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "kernels": loaded.kernels.describe() if loaded.kernels else None,
        "kernel_probe_gbs": loaded.kernels.speeds.gbs if loaded.kernels and loaded.kernels.speeds else None,
        "bytes": loaded.n_bytes,
        "context_length": loaded.context_length,
        "trained_context_length": loaded.trained_context_length,
        "tokenizer": str(loaded.tokenizer.path) if loaded.tokenizer else None,
        "tokenizer_kind": getattr(loaded.tokenizer, "kind", None),
        "tokenizer_tokens": loaded.tokenizer.vocab_size if loaded.tokenizer else None,
        "eos_ids": list(loaded.eos_ids),
        "generation_defaults": loaded.generation_defaults,
        "chat_template": loaded.chat_template is not None,
        "model_card": loaded.model_card,
    }
    if args.json:
        print(json.dumps(description, indent=2, ensure_ascii=False))
        return 0
    for key, value in description.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k}: {v}")
        else:
            number = isinstance(value, int) and not isinstance(value, bool)
            print(f"{key}: {value:,}" if number else f"{key}: {value}")
    return 0


def run_corpus(args) -> int:
    from pathlib import Path

    from .corpus import build_corpus

    print(json.dumps(build_corpus(Path(args.out), args.tokenizer, args.vocab_size), indent=2))
    return 0


def run_train(args) -> int:
    import torch

    from .config import ModelArgs
    from .train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    model = ModelArgs(dim=args.dim, n_layers=args.n_layers, n_heads=args.n_heads, n_kv_heads=args.n_kv_heads,
                      vocab_size=args.vocab_size, multiple_of=32, max_seq_len=args.max_seq_len)
    config = TrainConfig(
        model=model, data_dir=args.data, out_dir=args.out, tokens=int(args.tokens), batch_size=args.batch_size,
        grad_accum=args.grad_accum, seq_len=args.max_seq_len, lr=args.lr, warmup_steps=args.warmup_steps,
        eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, seed=args.seed, bf16_autocast=args.bf16,
    )
    summary = train(config, device=args.device)
    print(f"step {summary['step']}/{config.total_steps}, {summary['tokens']:,} tokens, {summary['flops']:.2e} FLOPs")
    return 0


def run_export(args) -> int:
    from .model_card import export_run

    card = export_run(args.run, args.tokenizer, args.out, args.name)
    print(json.dumps(card, indent=2, ensure_ascii=False))
    return 0


def run_scaling_grid(args) -> int:
    import torch

    from .scaling import merge_results, run_grid, summarize

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.merge:
        merge_results(args.merge, args.results)
    elif not args.fit_only:
        run_grid(args.data, args.runs, args.results, train_runs=not args.collect_only, device=args.device,
                 budgets=args.budgets)
    print(json.dumps(summarize(args.results), indent=2))
    return 0


def run_export_gguf(args) -> int:
    from .formats.gguf_export import export_gguf  # deferred: only this command needs the gguf package

    out = export_gguf(args.model, args.out, args.dtype)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {args.dtype})")
    return 0


COMMANDS = {"generate": run_generate, "info": run_info, "corpus": run_corpus, "train": run_train,
            "export-run": run_export, "scaling-grid": run_scaling_grid, "export-gguf": run_export_gguf}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... --json | head`: the reader left; not an error
        sys.stdout = open(os.devnull, "w")
        return 0
