"""Quantized models at load: `quantize="int4"/"int8"` on a float checkpoint, GGUF Q4_0/Q4_1/Q8_0/K-quant blocks
mapped onto the int4/int8 kernels, the option's errors, and generation with the result."""

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as QType
from gguf.quants import quantize as gguf_quantize

from llama_core import load_checkpoint
from llama_core.errors import ParameterError
from llama_core.formats.gguf_tensors import QuantizedTensor
from llama_core.formats.hf import save_hf_checkpoint
from llama_core.generation import generate_stream
from llama_core.kernels.int4 import Int4Linear
from llama_core.kernels.int8 import Int8Linear
from llama_core.kernels.quantized_model import gguf_module, parse_quantize
from llama_core.model import Transformer
from llama_core.sampling import SamplingParams

from conftest import tiny_args
from gguf_fixtures import write_llamacpp_gguf
from transformers import LlamaConfig, LlamaForCausalLM

pytestmark = pytest.mark.numerics

BF16_UNIT = 2.0**-8  # bf16's unit roundoff (8 significant bits)


def blocks(weight: torch.Tensor, qtype: QType) -> QuantizedTensor:
    """`weight` stored as GGUF blocks of `qtype`, written by the gguf package's own quantizer."""
    data = gguf_quantize(weight.float().numpy(), qtype)
    return QuantizedTensor(qtype, tuple(weight.shape), torch.from_numpy(np.ascontiguousarray(data)))


# Where each K-quant block keeps its fp16 super-block scale(s) (ggml-common.h): the rest of a block is
# codes and 6-bit sub-scales, any bytes of which decode to finite values.
K_SCALE_OFFSETS = {QType.Q4_K: (0, 2), QType.Q5_K: (0, 2), QType.Q6_K: (208,)}


def random_k_blocks(rows: int, columns: int, qtype: QType, seed: int) -> QuantizedTensor:
    """K-quant blocks as a file could hold them (gguf's quantizer does not write K-quants): random codes
    and sub-scales, super-block scales of a typical weight's size."""
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    generator = np.random.default_rng(seed)
    raw = generator.integers(0, 256, (rows, columns // block_size, type_size), dtype=np.uint8)
    for offset in K_SCALE_OFFSETS[qtype]:
        scales = (generator.uniform(2e-4, 1e-3, (rows, columns // block_size))).astype(np.float16)
        raw[..., offset : offset + 2] = scales.view(np.uint8).reshape(rows, -1, 2)
    return QuantizedTensor(qtype, (rows, columns), torch.from_numpy(raw.reshape(rows, -1)))


def test_q4_0_blocks_go_onto_the_int4_kernel_with_the_files_own_codes():
    weight = torch.randn(64, 256, generator=torch.Generator().manual_seed(0)) * 0.05
    stored = blocks(weight, QType.Q4_0)
    module = gguf_module(stored, None)
    assert isinstance(module, Int4Linear) and module.group_size == 32
    assert torch.equal(module.codes(), stored.codes())  # no re-quantization: the file's 4-bit codes
    assert (module.zero == 0).all()
    # The only change: each block's fp16 scale rounded to bf16, which moves its weights by ≤ 2**-8 of them.
    values, file_values = module.weight, stored.dequantize()
    assert ((values - file_values).abs() <= BF16_UNIT * file_values.abs()).all()
    assert not torch.equal(values, file_values)  # (bf16 is not exact for most fp16 scales: the test would see it)


def test_q4_1_blocks_keep_their_codes_and_fold_the_minimum_into_the_zero_point():
    weight = torch.randn(64, 256, generator=torch.Generator().manual_seed(1)) * 0.05 + 0.01
    stored = blocks(weight, QType.Q4_1)
    module = gguf_module(stored, None)
    assert torch.equal(module.codes(), stored.codes())
    # w = d·q + m = d·(q − 8) + (m + 8d): scale and zero point each rounded once to bf16, so a weight moves by at
    # most 2**-8·(|d|·|q − 8| + |m + 8d|).
    d, m = stored.scales().float(), stored.mins().float()
    allowed = BF16_UNIT * ((d * 8)[..., None] + (m + 8 * d).abs()[..., None]).expand(64, 8, 32).reshape(64, 256)
    assert ((module.weight - stored.dequantize()).abs() <= allowed * 1.0001).all()


@pytest.mark.parametrize("qtype, kernel", [(QType.Q8_0, Int8Linear), (QType.Q6_K, Int8Linear), (QType.Q5_K, Int8Linear),
                                           (QType.Q4_K, Int4Linear)], ids=lambda v: getattr(v, "name", ""))
def test_other_blocks_are_dequantized_and_requantized_to_at_least_their_bits(qtype, kernel):
    if qtype == QType.Q8_0:
        stored = blocks(torch.randn(64, 256, generator=torch.Generator().manual_seed(2)) * 0.05, qtype)
    else:
        stored = random_k_blocks(64, 256, qtype, seed=2)
    module = gguf_module(stored, None)
    assert isinstance(module, kernel)
    file_values = stored.dequantize()
    assert torch.isfinite(file_values).all() and file_values.std() > 1e-4
    if kernel is Int8Linear:  # within half a step of the row's int8 scale (absmax / 127 rounded up to bf16)
        step = file_values.abs().amax(1, keepdim=True) / 127 * (1 + 2 * BF16_UNIT)
        assert ((module.weight - file_values).abs() <= step * 0.5 * 1.0001).all()
    else:
        assert ((module.weight - file_values).abs()
                <= (module.scale.float() / 2).repeat_interleave(32, 1) * 1.0001).all()


def test_an_explicit_quantize_option_overrides_the_files_bit_width():
    stored = blocks(torch.randn(64, 256) * 0.05, QType.Q4_0)
    assert isinstance(gguf_module(stored, ("int8", 0)), Int8Linear)
    coarse = gguf_module(stored, ("int4", 128))
    assert isinstance(coarse, Int4Linear) and coarse.group_size == 128


def test_the_quantize_option_is_checked_with_what_is_allowed():
    assert parse_quantize("int4") == ("int4", 32) and parse_quantize("int4-g128") == ("int4", 128)
    assert parse_quantize("int8") == ("int8", 0) and parse_quantize(None) is None
    with pytest.raises(ParameterError, match=r"quantize must be None or one of 'int8', 'int4', 'int4-g32'.*got 'int3'"):
        parse_quantize("int3")
    with pytest.raises(ParameterError, match="quantize"):
        parse_quantize(4)


def quantizable(tmp_path, tokenizer_vocab: int = 320):
    torch.manual_seed(0)
    model = Transformer(tiny_args(tokenizer_vocab, dim=128, multiple_of=128)).eval().requires_grad_(False)
    save_hf_checkpoint(model.state_dict(), model.args, tmp_path)
    return model


@pytest.mark.parametrize("option, group", [("int4", 32), ("int4-g64", 64), ("int4-g128", 128)])
def test_a_float_checkpoint_loads_as_int4_and_says_so(tmp_path, option, group):
    reference = quantizable(tmp_path)
    loaded = load_checkpoint(tmp_path, quantize=option)
    wq = loaded.model.layers[0].attention.wq
    assert isinstance(wq, Int4Linear) and wq.group_size == group and isinstance(loaded.model.output, Int8Linear)
    assert loaded.kernels.weights == f"int4-g{group}" and loaded.kernels.residual == "fp32"
    assert loaded.kernels.describe().startswith(f"int4-g{group} weights, fp32 residual")
    fp32_bytes = load_checkpoint(tmp_path).n_bytes
    assert loaded.n_bytes < 0.45 * fp32_bytes  # 4-bit projections, an int8 head, fp32 embeddings
    tokens = torch.randint(0, 320, (1, 12), generator=torch.Generator().manual_seed(1))
    ref, out = reference(tokens).logits, loaded.model(tokens).logits
    assert 0.005 < ((out - ref).norm() / ref.norm()).item() < 0.25  # a 4-bit model's error: see test_int4.py


def test_a_group_that_does_not_divide_the_model_is_refused_by_name(tmp_path):
    torch.manual_seed(0)
    model = Transformer(tiny_args(300)).eval()  # dim 64: no group of 128 fits
    save_hf_checkpoint(model.state_dict(), model.args, tmp_path)
    with pytest.raises(ParameterError, match=r"group_size must be a group size that divides .*\(64 here\): 32, 64"):
        load_checkpoint(tmp_path, quantize="int4-g128")


def test_an_int4_model_generates(tokenizer, tmp_path):
    reference = quantizable(tmp_path, tokenizer.vocab_size)
    loaded = load_checkpoint(tmp_path, quantize="int4")
    params = SamplingParams(temperature=0.8, top_k=40, max_new_tokens=12, seed=3)
    steps = list(generate_stream(loaded.model, tokenizer, "Alice was", params))
    assert len(steps) == 12 and all(0 <= s.token_id < tokenizer.vocab_size for s in steps)
    assert all(np.isfinite(s.entropy) and 0 < s.prob <= 1 for s in steps)
    # Prefill and cached decode agree: the last step's logits equal a full forward over the same tokens.
    ids = tokenizer.encode("Alice was", bos=True) + [s.token_id for s in steps[:-1]]
    with torch.no_grad():
        full = loaded.model(torch.tensor([ids])).logits[0, -1]
    assert torch.isclose(torch.softmax(full[: tokenizer.vocab_size], -1)[steps[-1].token_id],
                         torch.tensor(steps[-1].prob), rtol=0.05)
    del reference


def hf_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         rms_norm_eps=1e-5, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("qtype", [QType.Q4_0, QType.Q4_1, QType.Q8_0], ids=lambda t: t.name)
def test_a_quantized_gguf_stays_quantized_by_default_and_matches_its_dequantized_values(tmp_path, qtype):
    (path,) = write_llamacpp_gguf(hf_model(), tmp_path / f"m-{qtype.name}.gguf", qtype)
    kept = load_checkpoint(path)
    kernel = Int8Linear if qtype == QType.Q8_0 else Int4Linear
    assert isinstance(kept.model.layers[1].feed_forward.w2, kernel) and isinstance(kept.model.output, kernel)
    assert kept.model.tok_embeddings.weight.dtype == torch.float32  # decoded exactly, read a row at a time
    label = "int8" if qtype == QType.Q8_0 else "int4-g32"
    assert kept.kernels.weights == f"GGUF {qtype.name} → {label} (15)"  # 7 projections × 2 layers + the head
    dequantized = load_checkpoint(path, dtype="fp32")  # an explicit float dtype decodes every block
    assert isinstance(dequantized.model.layers[1].feed_forward.w2, torch.nn.Linear)
    tokens = torch.randint(0, 96, (1, 16), generator=torch.Generator().manual_seed(5))
    ref, out = dequantized.model(tokens).logits, kept.model(tokens).logits
    # What remains is bf16 rounding: activations at each projection's input (and the scales, for 4-bit; the
    # per-row re-quantization of Q8_0's blocks): a fraction of a percent, far below the file's own 4-bit error.
    assert ((out - ref).norm() / ref.norm()).item() < 0.03
