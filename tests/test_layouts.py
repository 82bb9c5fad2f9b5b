"""Every layout of the real downloads (layout_fixtures) loads, describes itself and generates as transformers does.

For each: `info` reports the context, eos ids and generation defaults its files state; the prompt's token ids equal
transformers' AutoTokenizer's; greedy decoding through the CLI (fp32) gives transformers' greedy tokens and stops at
any eos id exactly where transformers' `generate` stops with the layout's generation config.

Greedy equality is claimed only with a margin: every step's top-2 gap in transformers' (processed) scores is
checked to exceed MIN_MARGIN, far above the ~1e-6 by which two fp32 implementations' logits differ here, so a
near-tie cannot flip the comparison by rounding.
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from layout_fixtures import BUILDERS, N_NEW, PROMPT, Layout
from transformers import AutoModelForCausalLM, AutoTokenizer

from llama_core.cli import main
from llama_core.generation import encode_prompt
from llama_core.loading import load_checkpoint

pytestmark = pytest.mark.numerics  # parity with transformers at fp32 tolerances

MIN_MARGIN = 1e-3


@pytest.fixture(scope="session")
def layouts(tmp_path_factory):
    logging.getLogger("transformers").setLevel(logging.ERROR)  # its notes on generation flags we override
    root, built = tmp_path_factory.mktemp("layouts"), {}

    def build(name: str) -> Layout:
        if name not in built:
            built[name] = BUILDERS[name](root)
        return built[name]

    return build


def transformers_greedy(layout: Layout) -> tuple[list[int], list[int]]:
    """(prompt ids, greedy continuation) from transformers, with the margin of every step checked."""
    tokenizer = AutoTokenizer.from_pretrained(layout.reference)
    model = AutoModelForCausalLM.from_pretrained(layout.reference, dtype=torch.float32)
    prompt = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    eos = model.generation_config.eos_token_id
    pad = (eos[0] if isinstance(eos, list) else eos) or 0  # only silences the "no pad token" notice
    out = model.generate(prompt, max_new_tokens=N_NEW, do_sample=False, output_scores=True,
                         return_dict_in_generate=True, pad_token_id=pad)
    for step, scores in enumerate(out.scores):
        top2 = torch.topk(scores[0].float(), 2).values
        assert top2[0] - top2[1] > MIN_MARGIN, f"{layout.name}: near-tie at step {step}, pick another fixture seed"
    return prompt[0].tolist(), out.sequences[0, prompt.shape[1]:].tolist()


def run_cli(capsys, *argv: str) -> list[dict]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return [json.loads(line) for line in captured.out.splitlines() if line.strip()]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_info_reports_context_eos_and_generation_defaults(name, layouts, capsys):
    layout = layouts(name)
    (info,) = [json.loads(capsys.readouterr().out)] if main(["info", "--model", str(layout.path), "--json"]) == 0 \
        else pytest.fail(capsys.readouterr().err)
    assert (info["context_length"], info["trained_context_length"]) == (layout.context_length,
                                                                        layout.trained_context_length)
    assert set(layout.declared_eos) <= set(info["eos_ids"])
    assert info["generation_defaults"] == layout.generation_defaults
    assert info["tokenizer_tokens"] <= info["config"]["vocab_size"]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_prompt_ids_equal_autotokenizer(name, layouts):
    layout = layouts(name)
    loaded = load_checkpoint(layout.path)
    assert encode_prompt(loaded.tokenizer, PROMPT) == AutoTokenizer.from_pretrained(layout.reference)(PROMPT)["input_ids"]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_cli_greedy_tokens_and_eos_stop_equal_transformers(name, layouts, capsys):
    layout = layouts(name)
    _, expected = transformers_greedy(layout)
    records = run_cli(capsys, "generate", "--model", str(layout.path), "--dtype", "float32", "--prompt", PROMPT,
                      "--temperature", "0", "--max-new-tokens", str(N_NEW), "--json")
    assert [r["token_id"] for r in records] == expected
    stopped_early = len(expected) < N_NEW
    assert records[-1]["stop_reason"] == ("eos" if stopped_early else "length")


def test_a_second_eos_id_from_generation_config_ends_the_run_where_transformers_stops(layouts, capsys):
    layout = layouts("bf16-generation-config")
    _, expected = transformers_greedy(layout)
    assert expected[-1] == layout.extra_eos and len(expected) < N_NEW  # the fixture's premise
    records = run_cli(capsys, "generate", "--model", str(layout.path), "--dtype", "float32", "--prompt", PROMPT,
                      "--temperature", "0", "--max-new-tokens", str(N_NEW), "--json")
    assert [r["token_id"] for r in records] == expected and records[-1]["stop_reason"] == "eos"


def test_generation_config_values_are_the_cli_defaults_and_flags_override_them(layouts, capsys):
    layout = layouts("bf16-generation-config")
    run_cli(capsys, "generate", "--model", str(layout.path), "--prompt", PROMPT, "--max-new-tokens", "2",
            "--seed", "1", "--top-k", "5", "--json")
    # Checked through what the CLI says it took from the model (the sampling itself is random).
    main(["generate", "--model", str(layout.path), "--prompt", PROMPT, "--max-new-tokens", "2", "--top-k", "5"])
    err = capsys.readouterr().err
    assert "model defaults from generation_config.json: temperature 0.7, top_p 0.9, repetition_penalty 1.1" in err
    assert "top_k" not in err.split("model defaults")[1].split(";")[0]


def test_bf16_checkpoint_keeps_its_dtype_when_asked_and_matches_fp32_logits_to_bf16_precision(layouts):
    layout = layouts("bf16-generation-config")
    bf16 = load_checkpoint(layout.path, dtype="bf16")
    fp32 = load_checkpoint(layout.path, dtype="fp32")
    ids = torch.tensor([encode_prompt(fp32.tokenizer, PROMPT)])
    assert bf16.dtype == torch.bfloat16
    with torch.no_grad():
        a, b = bf16.model(ids).logits, fp32.model(ids).logits
    # bf16 keeps 8 mantissa bits (relative step 2^-8 ≈ 0.004) through ~10 roundings per layer: a few percent of
    # the logits' spread, never more than 0.1 of it on these tiny two-layer models.
    assert (a - b).abs().max() < 0.1 * b.abs().max()


def test_meta_context_follows_the_model_generation(layouts, tmp_path):
    layout = layouts("llama-1-meta")
    download = shutil.copytree(layout.path.parent, tmp_path / "llama")
    params = download / "13B" / "params.json"
    assert load_checkpoint(download / "13B").context_length == 2048  # LLaMA-1: norm_eps 1e-6
    params.write_text(json.dumps({**json.loads(params.read_text()), "norm_eps": 1e-05}))
    assert load_checkpoint(download / "13B").context_length == 4096  # Llama 2: norm_eps 1e-5
    with pytest.warns(UserWarning, match="context_length 8192 is above the 4096 positions"):
        assert load_checkpoint(download / "13B", context_length=8192).model.args.max_seq_len == 8192
