"""The inference layouts: same numbers, other strides; fused projections; int8 quantization."""

import pytest
import torch

from llama_core.generation import generate_stream
from llama_core.loading import load_checkpoint
from llama_core.model import Transformer
from llama_core.kernels.int8 import Int8Linear, is_quantized, quantize_int8
from llama_core.sampling import SamplingParams
from llama_core.kernels.weight_layout import prepare_for_inference

from conftest import tiny_args
from numerics import FP32_REORDER, assert_close_to_scale, assert_greedy_is_robust

pytestmark = pytest.mark.numerics


def fresh(tie=False, seed=0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(tiny_args(300, tie_embeddings=tie)).eval().requires_grad_(False)


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("fuse", [False, True])
def test_prepared_model_gives_the_same_logits_prefill_and_decode(tie, fuse):
    reference, fast = fresh(tie), prepare_for_inference(fresh(tie), fuse=fuse)
    tokens = torch.randint(0, 300, (1, 12))
    ref_cache, fast_cache = reference.new_cache(), fast.new_cache()
    # Fused and input-major matrices sum in another order: equal up to fp32 rounding of the scale.
    assert_close_to_scale(fast(tokens, fast_cache).logits, reference(tokens, ref_cache).logits, FP32_REORDER,
                          "fast layout prefill")
    for token in (5, 17, 250):
        step = torch.tensor([[token]])
        assert_close_to_scale(fast(step, fast_cache).logits, reference(step, ref_cache).logits, FP32_REORDER,
                              "fast layout decode")


def test_fused_weights_stay_readable_by_name_and_share_memory():
    model = prepare_for_inference(fresh())
    attention = model.layers[0].attention
    reference = fresh().layers[0].attention
    for name in ("wq", "wk", "wv"):
        assert torch.equal(getattr(attention, name).weight, getattr(reference, name).weight)
    assert attention.wq.weight.data_ptr() == attention.fused_qkv.data_ptr()
    assert set(model.state_dict()) == set(fresh().state_dict())  # the fused matrix is not a new name
    assert model.output.weight.stride() == (1, model.output.weight.shape[0])


def test_a_later_dtype_change_unfuses_and_stays_correct():
    model = prepare_for_inference(fresh()).to(torch.float64)  # copies each weight: the fused matrix is stale
    reference = fresh().to(torch.float64)
    tokens = torch.randint(0, 300, (1, 6))
    torch.testing.assert_close(model(tokens).logits, reference(tokens).logits, atol=1e-9, rtol=0)


def test_greedy_tokens_of_the_fast_layout_equal_the_reference(tokenizer):
    params = SamplingParams(temperature=0, max_new_tokens=24)
    ids = tokenizer.encode("Alice was", bos=True)
    reference = [s.token_id for s in generate_stream(fresh_for(tokenizer), tokenizer, ids, params)]
    fast = [s.token_id for s in generate_stream(prepare_for_inference(fresh_for(tokenizer)), tokenizer, ids, params)]
    # Equal tokens are a fair claim only where no step's top-2 gap is within the layouts' rounding.
    with torch.no_grad():
        assert_greedy_is_robust(fresh_for(tokenizer)(torch.tensor([ids + reference[:-1]])).logits[0, len(ids) - 1:],
                                FP32_REORDER, "fast layout greedy")
    assert fast == reference


def fresh_for(tokenizer) -> Transformer:
    torch.manual_seed(1)
    return Transformer(tiny_args(tokenizer.vocab_size)).eval().requires_grad_(False)


def test_int8_linear_rounds_each_row_to_its_own_scale():
    weight = torch.randn(64, 32)
    weight[3] = 0  # an all-zero row must not divide by zero
    layer = Int8Linear(weight)
    assert layer.qweight.dtype == torch.int8 and layer.qweight.abs().max() >= 126  # absmax near ±127
    assert torch.equal(layer.weight[3], torch.zeros(32))
    # Each weight within half a step of its code: the step is absmax / 127 rounded up to the kernel's bf16
    # (at most 2**-7 more), and the codes were taken with that rounded step.
    step = layer.scale.float()[:, None]
    assert (step <= weight.abs().amax(1, keepdim=True) / 127 * (1 + 2**-7) + 1e-30).all()
    assert ((layer.weight - weight).abs() <= 0.5 * step * (1 + 2**-20)).all()
    x = torch.randn(3, 5, 32)
    out = layer(x)
    assert out.shape == (3, 5, 64) and out.dtype == x.dtype
    exact = x @ weight.T
    assert (out - exact).norm() / exact.norm() < 0.02


def test_int8_prefill_rows_take_the_dequantized_bf16_product():
    from llama_core.kernels import int8

    weight = torch.randn(96, 64)
    layer = Int8Linear(weight)
    x = torch.randn(int8.PREFILL_ROWS, 64)
    exact = x.double() @ layer.weight.double().T  # the int8 values, exactly
    # Either path: activations and q·s rounded to bf16 (≤ 2**-8 each), fp32 sums, a bf16 output.
    bound = 2**-8 * (2 * x.double().abs() @ layer.weight.double().abs().T + exact.abs()) * 1.01
    prefill, decode = layer(x).double(), layer(x[:1]).double()
    assert ((prefill - exact).abs() <= bound).all() and ((decode - exact[:1]).abs() <= bound[:1]).all()


def test_int8_model_is_close_to_fp32_and_loads_by_flag(tmp_path):
    from llama_core.formats.hf import save_hf_checkpoint

    model = fresh()
    save_hf_checkpoint(model.state_dict(), model.args, tmp_path)
    loaded = load_checkpoint(tmp_path, quantize="int8")
    assert is_quantized(loaded.model)
    assert loaded.n_bytes < 0.5 * load_checkpoint(tmp_path).n_bytes
    tokens = torch.randint(0, 300, (1, 10))
    ref = model(tokens).logits
    quantized = quantize_int8(fresh())(tokens).logits
    torch.testing.assert_close(loaded.model(tokens).logits, quantized, atol=0, rtol=0)
    assert (quantized - ref).norm() / ref.norm() < 0.05


def test_unknown_quantization_is_a_parameter_error(tmp_path):
    from llama_core.errors import ParameterError

    with pytest.raises(ParameterError, match="quantize"):
        load_checkpoint(tmp_path, quantize="int3")


def test_bf16_weights_are_fused_but_stay_row_major():
    # PyTorch's bf16 matrix-vector product is ~10x slower on input-major weights on AVX2 CPUs.
    model = prepare_for_inference(fresh().to(torch.bfloat16))
    attention = model.layers[0].attention
    assert attention.fused_qkv.is_contiguous() and attention.wq.weight.is_contiguous()
    assert model.output.weight.is_contiguous()
    reference = fresh().to(torch.bfloat16)
    tokens = torch.randint(0, 300, (1, 6))
    torch.testing.assert_close(model(tokens).logits, reference(tokens).logits, atol=2e-2, rtol=0)
