"""Shared offline fixtures: a SentencePiece model trained in a temp dir and a seeded tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from llama_core.config import ModelArgs
from llama_core.model import Transformer
from llama_core.tokenizer import Tokenizer

CORPUS = Path(__file__).parent / "data" / "tiny_corpus.txt"


def train_tokenizer(out_dir: Path, vocab_size: int = 512) -> Path:
    """Train a LLaMA-style tokenizer (BPE, byte fallback, split digits) on the tiny corpus."""
    prefix = out_dir / "tokenizer"
    spm.SentencePieceTrainer.train(
        input=str(CORPUS), model_prefix=str(prefix), vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, split_digits=True, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0,
        pad_id=-1, normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, minloglevel=2,
    )
    return prefix.with_suffix(".model")


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory) -> Path:
    return train_tokenizer(tmp_path_factory.mktemp("spm"))


@pytest.fixture(scope="session")
def tokenizer(tokenizer_path) -> Tokenizer:
    return Tokenizer.from_file(tokenizer_path)


def tiny_args(vocab_size: int, **changes) -> ModelArgs:
    args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=vocab_size, multiple_of=32,
                     max_seq_len=128)
    return args.replace(**changes)


@pytest.fixture(scope="session")
def tiny_model(tokenizer) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(tiny_args(tokenizer.vocab_size)).eval()
    # Default init gives near-uniform logits; scale the output so sampling filters have work to do.
    with torch.no_grad():
        model.output.weight.mul_(20)
    return model.requires_grad_(False)
