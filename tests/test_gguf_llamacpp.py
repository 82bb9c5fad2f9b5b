"""GGUF files written by llama.cpp's own quantizer, read by us and by llama.cpp (llama-cpp-python): the same greedy
tokens, and the same tokenization of the vocabularies.

The bundled playground-16m (SentencePiece, 4096 tokens) is exported by our exporter as f32, then
`llama_cpp.llama_model_quantize` writes F16, Q8_0, Q4_0 and Q4_K_M files from it, as a llama.cpp user would. Greedy
tokens are compared position by position: our run's tokens (generate_stream, KV cache) against the argmax of
llama.cpp's logits, llama.cpp decoding one token at a time along the same sequence — its own greedy tokens up to the
first difference. llama.cpp does not compute what we compute bit for bit: it rounds activations to fp16 before an
F16 dot product (2^-11 relative) and to 8-bit blocks before a Q8_0/Q4_0/K-quant one (1/254 of each block's
largest activation), where we keep fp32 activations. So the logits are compared within a bound for each kind
(ALLOWED, measured on this machine: at most 0.03% of the logits' scale for F16, 1.1% for the quantized files), and
a token may differ only where our two top candidates are closer than twice that bound: a near-tie, whose margin the
test checks. For F16 the prompt is one whose every top-2 gap is far outside that band, so all tokens must agree.

This machine (AVX-512 + AMX): llama.cpp 0.3.36's "extra" CPU buffer types (repacked / AMX weights) crash in decode
on the Q8_0 file, so llama.cpp runs with its plain CPU kernels here (`use_extra_bufts = False`).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf_fixtures import bpe_vocabulary, vocabulary_only_gguf
from test_gguf_vocab import LLAMA_SPM_GGUF, TEXTS
from tokenizer_fixtures import write_llama3_hf, write_smollm_hf

from llama_core import SamplingParams, generate_stream, load_checkpoint
from llama_core.formats.gguf import read_gguf
from llama_core.formats.gguf_export import export_gguf
from llama_core.tokenizer import load_tokenizer

llama_cpp = pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.numerics

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "playground-16m"
NEW_TOKENS = 48
# kind → (llama.cpp file type, logits agreement bound as a fraction of their scale, prompt)
CASES = {
    "F16": ("LLAMA_FTYPE_MOSTLY_F16", 1e-3, "Blessed are the poor in spirit:"),
    "Q8_0": ("LLAMA_FTYPE_MOSTLY_Q8_0", 2e-2, "In the beginning God created"),
    "Q4_0": ("LLAMA_FTYPE_MOSTLY_Q4_0", 2e-2, "In the beginning God created"),
    "Q4_K_M": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", 2e-2, "In the beginning God created"),
}


@pytest.fixture(scope="module", autouse=True)
def plain_llamacpp_kernels():
    module = llama_cpp.llama_cpp
    default = module.llama_model_default_params

    def without_extra_buffers():
        params = default()
        params.use_extra_bufts = False
        return params

    module.llama_model_default_params = without_extra_buffers
    yield
    module.llama_model_default_params = default


@pytest.fixture(scope="module")
def llamacpp_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("llamacpp")
    source = export_gguf(BUNDLED, folder / "playground-16m-f32.gguf", "f32")
    files = {}
    for kind, (file_type, _, _) in CASES.items():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype, params.nthread = getattr(llama_cpp, file_type), 2
        out = folder / f"playground-16m-{kind}.gguf"
        assert llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params)) == 0
        files[kind] = out
    return files


def llamacpp_logits(path: Path, tokens: list[int], n_prompt: int) -> torch.Tensor:
    """llama.cpp's logits after each position from the last prompt token on, decoding one token at a time."""
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=len(tokens) + 8, n_threads=2, logits_all=True, verbose=False)
    llm.eval(tokens[:n_prompt])
    for token in tokens[n_prompt:]:
        llm.eval([token])
    return torch.tensor(np.array(llm.scores[n_prompt - 1 : len(tokens)]), dtype=torch.float64)


@pytest.mark.parametrize("kind", list(CASES))
def test_greedy_tokens_equal_llamacpps_up_to_a_near_tie(llamacpp_files, kind):
    _, allowed, prompt = CASES[kind]
    path = llamacpp_files[kind]
    assert read_gguf(path).file_type == CASES[kind][0].removeprefix("LLAMA_FTYPE_")
    loaded = load_checkpoint(path, dtype="fp32")
    prompt_ids = loaded.tokenizer.encode(prompt)
    llm_vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    assert llm_vocab.tokenize(prompt.encode(), add_bos=True) == prompt_ids
    params = SamplingParams(temperature=0.0, max_new_tokens=NEW_TOKENS)
    ours = [step.token_id for step in generate_stream(loaded.model, loaded.tokenizer, prompt_ids, params,
                                                      eos_ids=())]
    sequence = prompt_ids + ours
    theirs = llamacpp_logits(path, sequence, len(prompt_ids))  # row i: logits that pick ours[i]
    with torch.no_grad():
        our_logits = loaded.model(torch.tensor([sequence])).logits[0, len(prompt_ids) - 1 :].double()
    theirs_pick = theirs[: len(ours)].argmax(-1).tolist()
    first = next((i for i, (a, b) in enumerate(zip(ours, theirs_pick)) if a != b), None)
    compared = slice(0, len(ours) if first is None else first + 1)
    scale = our_logits.abs().max().item()
    worst = (our_logits[compared] - theirs[compared]).abs().max().item()
    assert worst <= allowed * scale, f"{kind}: logits differ by {worst:.4g}, more than {allowed:g} of {scale:.3g}"
    if kind == "F16":
        top2 = our_logits[: len(ours)].topk(2, dim=-1).values
        margin = (top2[:, 0] - top2[:, 1]).min().item()
        assert margin > 2 * allowed * scale, f"F16: a top-2 gap of {margin:.3g} is within the bound; another prompt"
        assert first is None, f"F16: token {first} differs ({ours[first]} vs llama.cpp's {theirs_pick[first]})"
    elif first is not None:
        a, b = ours[first], theirs_pick[first]
        margin = (our_logits[first, a] - our_logits[first, b]).item()
        assert 0 <= margin <= 2 * allowed * scale, (
            f"{kind}: token {first} differs ({a} vs {b}) with a top-2 gap of {margin:.3g}, not a near-tie")


def test_our_read_of_llamacpps_quantized_blocks_holds_its_types(llamacpp_files):
    # What llama.cpp's quantizer chose for a model whose rows (384, 1024 columns) are not all 256-value blocks:
    # K-quants where they fit, Q5_0/Q8_0 where they do not; every one of them is read.
    types = set(read_gguf(llamacpp_files["Q4_K_M"]).tensor_types.values())
    assert {"Q4_K", "Q6_K", "F32"} <= types <= {"F32", "Q4_K", "Q5_0", "Q6_K", "Q8_0"}
    assert set(read_gguf(llamacpp_files["Q4_0"]).tensor_types.values()) <= {"F32", "Q4_0", "Q8_0", "Q6_K"}


@pytest.fixture(scope="module")
def vocabularies(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("vocab")
    write_llama3_hf(folder / "llama3")
    write_smollm_hf(folder / "smollm")
    return [
        LLAMA_SPM_GGUF,
        vocabulary_only_gguf(folder / "llama3.gguf", bpe_vocabulary(
            folder / "llama3" / "tokenizer.json", "llama-bpe", bos="<|begin_of_text|>", eos="<|eot_id|>")),
        vocabulary_only_gguf(folder / "smollm.gguf", bpe_vocabulary(
            folder / "smollm" / "tokenizer.json", "smollm", bos="<|im_start|>", eos="<|im_end|>")),
    ]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["llama-spm", "llama-bpe", "smollm"])
def test_llamacpp_tokenizes_the_gguf_vocabularies_as_we_do(vocabularies, index):
    path = vocabularies[index]
    ours = load_tokenizer(path)
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    for text in TEXTS:  # special=True: control tokens typed in text are matched, as our encode matches them
        assert ours.encode(text) == llm.tokenize(text.encode(), add_bos=ours.add_bos, special=True), text
    assert llm.tokenize(b"hi")[:1] == ours.encode("hi")[:1]  # the same BOS default
