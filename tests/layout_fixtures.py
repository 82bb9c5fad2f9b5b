"""Tiny checkpoints in the layouts of the real downloads, each with a Hugging Face twin transformers reads.

Every builder writes, from a seeded tiny transformers model, the files a real download has: their names, the
config keys and values that matter (RoPE scaling, tied embeddings, eos lists, head counts, dtype), and the
tokenizer of its kind from `tokenizer_fixtures`. `Layout.reference` is a Hugging Face directory with the same
weights and an equivalent tokenizer, which transformers' AutoTokenizer / AutoModelForCausalLM load as the
reference (for the Hugging Face layouts it is the directory itself).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from checkpoint_fixtures import save_pickled_hf
from tokenizer_fixtures import (
    LLAMA2_TEMPLATE, write_llama2_sentencepiece, write_llama2c_tokenizer, write_llama3_hf, write_llama3_tiktoken,
    write_smollm_hf,
)
from transformers import LlamaConfig, LlamaForCausalLM

from llama_core.formats.llama2c import save_llama2c
from llama_core.formats.meta import save_meta_checkpoint
from llama_core.loading import load_checkpoint

PROMPT = "Alice was beginning to get very tired of sitting"
N_NEW = 10  # greedy tokens compared
# Scaling the output head spreads the logits (random init gives near-uniform ones), so that greedy's top-2
# margins are wide enough for a token-for-token comparison.
HEAD_SCALE = 20.0
TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
# Meta's Llama 3.1 stop tokens and Llama 3.2 Instruct's eos list, by name.
LLAMA3_STOPS = ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")


@dataclass(frozen=True)
class Layout:
    name: str
    path: Path  # what load_checkpoint and the CLI are given
    reference: Path  # Hugging Face twin: same weights, equivalent tokenizer files
    context_length: int
    trained_context_length: int
    declared_eos: tuple[int, ...]  # eos ids the layout's own files name (config, generation config)
    generation_defaults: dict = field(default_factory=dict)
    extra_eos: int | None = None  # an eos id only generation_config.json names, hit by greedy decoding


def _model(vocab_size: int, seed: int = 0, **config) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, **{**TINY, **config})).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(HEAD_SCALE)
    return model


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def _edit_json(path: Path, **changes) -> None:
    _write_json(path, {**json.loads(path.read_text()), **changes})


def _llama3_ids(info: dict) -> dict[str, int]:
    # write_llama3_hf's ids; <|end_of_text|> is the special token right after <|begin_of_text|>.
    return {"<|begin_of_text|>": info["bos_id"], "<|end_of_text|>": info["bos_id"] + 1,
            "<|eom_id|>": info["eom_id"], "<|eot_id|>": info["eot_id"]}


def _meta_state(reference: Path) -> tuple[dict, object]:
    loaded = load_checkpoint(reference, dtype="fp32", fast_layout=False)
    return loaded.model.state_dict(), loaded.args


def llama32_hf(root: Path) -> Layout:
    """Llama 3.2 Instruct on the Hub: llama3 RoPE scaling, tied embeddings, explicit head_dim, eos lists."""
    path = root / "Llama-3.2-1B-Instruct"
    info = write_llama3_hf(path)
    ids = _llama3_ids(info)
    eos = [ids[name] for name in LLAMA3_STOPS]
    rope = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32, "rope_theta": 500000.0}
    model = _model(info["vocab_size"], tie_word_embeddings=True, head_dim=16, max_position_embeddings=128,
                   rope_parameters=rope, bos_token_id=ids["<|begin_of_text|>"], eos_token_id=eos)
    model.save_pretrained(path)
    _write_json(path / "generation_config.json", {"bos_token_id": ids["<|begin_of_text|>"], "do_sample": True,
                                                  "eos_token_id": eos, "temperature": 0.6, "top_p": 0.9})
    return Layout("llama-3.2-hf", path, path, 128, 128, tuple(eos), {"temperature": 0.6, "top_p": 0.9})


def llama30_hf(root: Path) -> Layout:
    """Meta-Llama-3-8B on the Hub: no RoPE scaling, tokenizer.json only (no tokenizer.model)."""
    path = root / "Meta-Llama-3-8B"
    info = write_llama3_hf(path, chat_template=None)
    ids = _llama3_ids(info)
    model = _model(info["vocab_size"], seed=1, max_position_embeddings=64, rope_parameters={"rope_theta": 500000.0},
                   bos_token_id=ids["<|begin_of_text|>"], eos_token_id=ids["<|end_of_text|>"])
    model.save_pretrained(path)
    return Layout("llama-3.0-hf", path, path, 64, 64, (ids["<|end_of_text|>"],))


def llama31_meta(root: Path) -> Layout:
    """Meta's own Llama 3.1 download: params.json with use_scaled_rope, a tiktoken tokenizer.model."""
    reference = root / "llama-3.1-reference"
    info = write_llama3_hf(reference, chat_template=None)
    ids = _llama3_ids(info)
    stops = [ids[name] for name in LLAMA3_STOPS]  # Meta's generation stops at these (tokenizer.stop_tokens)
    # Meta's constants for use_scaled_rope; FFN width 224 = what multiple_of 32, ffn_dim_multiplier 1.3 derive.
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192, "rope_theta": 500000.0}
    model = _model(info["vocab_size"], seed=2, intermediate_size=224, max_position_embeddings=131072,
                   rope_parameters=rope, eos_token_id=stops)
    model.save_pretrained(reference)
    path = root / "Meta-Llama-3.1-8B" / "original"
    save_meta_checkpoint(*_meta_state(reference), path)
    _write_json(path / "params.json", {
        "dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": info["vocab_size"], "multiple_of": 32,
        "ffn_dim_multiplier": 1.3, "norm_eps": 1e-05, "rope_theta": 500000.0, "use_scaled_rope": True})
    write_llama3_tiktoken(path)
    return Layout("llama-3.1-meta", path, reference, 8192, 131072, ())


def alpaca(root: Path) -> Layout:
    """Alpaca: 32001-row embeddings for 32000 pieces + [PAD] (added_tokens.json), sharded pytorch_model.bin."""
    path = root / "alpaca-7b"
    vocab = write_llama2_sentencepiece(path, added_pad=True)
    model = _model(vocab, seed=3, num_key_value_heads=4, rms_norm_eps=1e-6, max_position_embeddings=2048,
                   bos_token_id=1, eos_token_id=2, pad_token_id=0)
    save_pickled_hf(model, path, n_shards=2)
    index = path / "pytorch_model.bin.index.json"  # real indexes also carry the total size (transformers needs it)
    total = sum(t.numel() * t.element_size() for n, t in model.state_dict().items())
    _edit_json(index, metadata={"total_size": total})
    return Layout("alpaca", path, path, 2048, 2048, (2,))


def vicuna(root: Path) -> Layout:
    """TinyLlama-Chat / Vicuna: SentencePiece tokenizer.model with a chat_template, safetensors."""
    path = root / "TinyLlama-1.1B-Chat"
    vocab = write_llama2_sentencepiece(path, chat_template=LLAMA2_TEMPLATE)
    model = _model(vocab, seed=4, max_position_embeddings=2048, bos_token_id=1, eos_token_id=2)
    model.save_pretrained(path)
    return Layout("vicuna", path, path, 2048, 2048, (2,))


def smollm2(root: Path) -> Layout:
    """SmolLM2-Instruct: tokenizer.json only, 9 heads over 3 key/value heads, tied embeddings, no BOS."""
    path = root / "SmolLM2-135M-Instruct"
    info = write_smollm_hf(path)
    model = _model(info["vocab_size"], seed=5, hidden_size=72, num_attention_heads=9, num_key_value_heads=3,
                   tie_word_embeddings=True, max_position_embeddings=64, rope_parameters={"rope_theta": 100000.0},
                   bos_token_id=info["bos_id"], eos_token_id=info["eos_id"], pad_token_id=info["eos_id"])
    model.save_pretrained(path)
    return Layout("smollm2", path, path, 64, 64, (info["eos_id"],))


def bf16_generation_config(root: Path) -> Layout:
    """bf16 safetensors with a generation_config.json naming a second eos id, which greedy decoding hits."""
    path = root / "bf16-chat"
    vocab = write_llama2_sentencepiece(path, chat_template=LLAMA2_TEMPLATE)
    model = _model(vocab, seed=6, max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
    model.to(torch.bfloat16).save_pretrained(path)
    defaults = {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1}
    _write_json(path / "generation_config.json", {"bos_token_id": 1, "do_sample": True, "eos_token_id": [2],
                                                  **defaults})
    extra = _greedy_token_to_stop_at(path)
    _edit_json(path / "generation_config.json", eos_token_id=[2, extra])
    return Layout("bf16-generation-config", path, path, 256, 256, (2, extra), defaults, extra)


def _greedy_token_to_stop_at(path: Path, step: int = 4) -> int:
    """A token greedy decoding (as transformers runs it from this directory) produces at `step` for the first
    time: naming it an eos id must end the run right there."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    prompt = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    out = model.generate(prompt, max_new_tokens=N_NEW, do_sample=False, pad_token_id=0)[0, prompt.shape[1]:].tolist()
    candidates = [t for i, t in enumerate(out) if i >= step and t not in out[:i] and t != 2]
    assert candidates, f"greedy output {out} repeats itself; pick another seed for this fixture"
    return candidates[0]


def llama1_meta(root: Path) -> Layout:
    """Meta's LLaMA-1 download: tokenizer.model above the size folders, params.json with vocab_size -1, 2 shards."""
    reference = root / "llama-1-reference"
    write_llama2_sentencepiece(reference)
    model = _model(512, seed=7, intermediate_size=192, num_key_value_heads=4, rms_norm_eps=1e-6,
                   max_position_embeddings=2048, bos_token_id=1, eos_token_id=2)
    model.save_pretrained(reference)
    download = root / "llama"
    path = download / "13B"
    save_meta_checkpoint(*_meta_state(reference), path, n_shards=2)
    _write_json(path / "params.json", {"dim": 64, "multiple_of": 32, "n_heads": 4, "n_layers": 2, "norm_eps": 1e-06,
                                       "vocab_size": -1})
    write_llama2_sentencepiece(download)
    for side_file in ("tokenizer_config.json", "special_tokens_map.json"):  # Meta ships the bare tokenizer.model
        (download / side_file).unlink()
    return Layout("llama-1-meta", path, reference, 2048, 2048, ())


def llama2c(root: Path) -> Layout:
    """karpathy/llama2.c: a legacy (v0) model.bin with only llama2.c's tokenizer.bin beside it."""
    reference = root / "stories-reference"
    write_llama2_sentencepiece(reference)
    model = _model(512, seed=8, num_key_value_heads=4, tie_word_embeddings=True, max_position_embeddings=256)
    model.save_pretrained(reference)
    folder = root / "stories"
    folder.mkdir()
    state, args = _meta_state(reference)
    save_llama2c(state, args, folder / "stories-tiny.bin", version=0)
    write_llama2c_tokenizer(folder / "tokenizer.bin")
    return Layout("llama2c", folder / "stories-tiny.bin", reference, 256, 256, ())


BUILDERS = {
    "llama-3.2-hf": llama32_hf, "llama-3.0-hf": llama30_hf, "llama-3.1-meta": llama31_meta, "alpaca": alpaca,
    "vicuna": vicuna, "smollm2": smollm2, "bf16-generation-config": bf16_generation_config,
    "llama-1-meta": llama1_meta, "llama2c": llama2c,
}
