"""Weight-only int4 on PyTorch's `_weight_int4pack_mm_for_cpu`: the quantizer's guarantee, the kernel's
product within the error that guarantee allows, and a model that loads and generates with it."""

import pytest
import torch

from llama_core.errors import ParameterError
from llama_core.kernels.int4 import (
    GROUP_SIZES, Int4Linear, check_group_size, dequantize_groups, quantize_groups, quantize_int4,
)
from llama_core.kernels.int8 import Int8Linear, is_quantized
from llama_core.model import Transformer

from conftest import tiny_args

pytestmark = pytest.mark.numerics

BF16_UNIT = 2.0**-8  # bf16 keeps 8 significant bits: round-to-nearest moves a value by at most 2**-8 of it
FP32_UNIT = 2.0**-24


def awkward_matrix(rows: int, columns: int, seed: int = 0) -> torch.Tensor:
    """Gaussian weights plus the groups that break naive quantizers: constant, all-zero, far from zero, tiny."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, columns, generator=generator) * 0.02
    weight[1, :32] = 0.3  # constant: range 0
    weight[2, :] = 0  # an all-zero row
    weight[3, 32:64] = 5 + torch.rand(32, generator=generator) * 1e-3  # an offset much larger than the range
    weight[4, :32] *= 1e-30  # near bf16's smallest normal numbers
    return weight


@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_every_weight_lies_within_half_a_step_of_its_code(group_size):
    weight = awkward_matrix(96, 256)
    codes, scale, zero = quantize_groups(weight, group_size)
    assert codes.dtype == torch.uint8 and int(codes.max()) <= 15
    assert scale.dtype == zero.dtype == torch.bfloat16 and scale.shape == (96, 256 // group_size)
    error = (dequantize_groups(codes, scale, zero, group_size) - weight).abs().view(96, -1, group_size)
    # The guarantee: |w − ((q − 8)s + z)| ≤ s/2, up to the fp32 rounding of the dequantized value itself.
    allowed = scale.float()[..., None] / 2 + weight.abs().view(96, -1, group_size) * 4 * FP32_UNIT
    assert (error <= allowed).all(), (error - allowed).max()
    assert torch.equal(dequantize_groups(codes, scale, zero, group_size)[2], torch.zeros(256))
    # The step is not needlessly coarse: within one bf16 rounding (and the zero point's) of range / 15.
    groups = weight.view(96, -1, group_size)
    ideal = (groups.amax(-1) - groups.amin(-1)) / 15
    assert (scale.float() <= ideal * (1 + 4 * BF16_UNIT) + zero.float().abs() * 2 * BF16_UNIT / 7
            + torch.finfo(torch.bfloat16).tiny).all()


@pytest.mark.parametrize("rows", [1, 5, 64, 300])  # decode, a few rows, a chunk, a prefill (dequantized path)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_the_kernel_product_is_within_the_quantization_error_of_the_float_product(group_size, rows):
    weight = awkward_matrix(192, 512, seed=1)
    layer = Int4Linear.from_float(weight, group_size)
    x = torch.randn(rows, 512, generator=torch.Generator().manual_seed(2))
    out = layer(x).double()
    exact = x.double() @ weight.double().T

    # Error sources, each bounded elementwise (u = 2**-8, bf16's unit roundoff):
    #   the weights: |w − ŵ| ≤ s/2 (the quantizer's guarantee) → Σ_k |x̃_k|·s_k/2
    #   the activations rounded to bf16: |x − x̃| ≤ u|x| → u·Σ_k |x_k|·|w_k|
    #   for a prefill ŵ is dequantized to bf16 for the bf16 matrix product, (q − 8)·s and + z each rounded:
    #   u·Σ_k |x̃_k|·(2|ŵ_k| + |z_k|)
    #   fp32 accumulation over K terms: ≤ K·2**-24 · Σ_k |x̃_k ŵ_k|
    #   the output rounded to bf16: ≤ u of the result.
    x_bf16 = x.bfloat16().double()
    dequantized = dequantize_groups(*quantize_groups(weight, group_size), group_size).double()
    half_steps = (layer.scale.double() / 2).repeat_interleave(group_size, dim=1)  # (N, K)
    terms = x_bf16.abs() @ dequantized.abs().T
    zeros = layer.zero.double().abs().repeat_interleave(group_size, dim=1)
    bound = (x_bf16.abs() @ half_steps.T + BF16_UNIT * x.double().abs() @ weight.double().abs().T
             + BF16_UNIT * (2 * terms + x_bf16.abs() @ zeros.T) + 512 * FP32_UNIT * terms)
    bound = bound + BF16_UNIT * (exact.abs() + bound)
    assert ((out - exact).abs() <= bound).all(), ((out - exact).abs() - bound).max()
    # The bound is a worst case (every rounding the same way); the error seen is the quantization's:
    # independent roundings, uniform within ±s/2, spread like sqrt(Σ_k x_k² s_k² / 12) over the
    # Gaussian rows (from 5 on: the awkward groups above round all their weights alike).
    spread = ((x.double() ** 2) @ (2 * half_steps[5:].T) ** 2 / 12).sum().sqrt()
    assert 0.7 < ((out - exact)[:, 5:].norm() / spread).item() < 1.3
    if rows == 1:
        # Decode multiplies by exactly our dequantized values: against the exact product of the bf16
        # activations and ŵ only the fp32 accumulation and the output's rounding remain.
        product = x_bf16 @ dequantized.T
        assert ((out - product).abs() <= BF16_UNIT * product.abs() + 512 * FP32_UNIT * terms).all()


def test_codes_and_weight_read_back_what_was_packed():
    weight = awkward_matrix(160, 320, seed=3)  # 160 rows: not a multiple of the kernel's 64-row blocks
    codes, scale, zero = quantize_groups(weight, 32)
    layer = Int4Linear(codes, scale, zero, 32)
    assert torch.equal(layer.codes(), codes)
    assert torch.equal(layer.weight, dequantize_groups(codes, scale, zero, 32))
    assert torch.equal(layer.scale, scale) and torch.equal(layer.zero, zero)


def test_output_dtype_and_shape_follow_the_input():
    layer = Int4Linear.from_float(awkward_matrix(64, 128), 64)
    for dtype in (torch.float32, torch.bfloat16):
        out = layer(torch.randn(2, 3, 128).to(dtype))
        assert out.shape == (2, 3, 64) and out.dtype == dtype


def test_group_sizes_are_checked_with_what_is_allowed():
    with pytest.raises(ParameterError, match=r"group_size must be one of 32, 64, 128, got 16"):
        check_group_size(16)
    with pytest.raises(ParameterError, match=r"divides every projection's input width \(96 here\): 32"):
        Int4Linear.from_float(torch.randn(64, 96), 64)
    with pytest.raises(ParameterError, match="group_size"):
        check_group_size(True)
    with pytest.raises(ValueError, match="output width 40 is not a multiple of 16"):
        Int4Linear.from_float(torch.randn(40, 64), 32)
    with pytest.raises(ValueError, match="0..15"):
        Int4Linear(torch.full((64, 64), 16, dtype=torch.uint8), torch.ones(64, 2), torch.zeros(64, 2), 32)


def quantizable_model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    args = tiny_args(320, dim=128, multiple_of=128)  # every input width a multiple of 128
    return Transformer(args).eval().requires_grad_(False)


@pytest.mark.parametrize("group_size", [32, 128])
def test_an_int4_model_is_close_to_its_float_model(group_size):
    model = quantizable_model()
    reference = quantizable_model()
    quantize_int4(model, group_size)
    assert is_quantized(model)
    assert isinstance(model.layers[0].feed_forward.w2, Int4Linear) and isinstance(model.output, Int8Linear)
    tokens = torch.randint(0, 320, (1, 16), generator=torch.Generator().manual_seed(4))
    ref, out = reference(tokens).logits, model(tokens).logits
    # Per weight the rounding is up to half a step, range/30 of its group; over a matrix that is a
    # relative error of about step/sqrt(12)/std ≈ 8% (g32, Gaussian weights) to 11% (g128), and the
    # errors of 2 layers add in quadrature: well under 25%, and never zero.
    relative = ((out - ref).norm() / ref.norm()).item()
    assert 0.005 < relative < 0.25, relative


def test_quantizing_and_packing_by_blocks_of_rows_gives_the_whole_matrix_result(monkeypatch):
    import llama_core.kernels.int8 as int8_module

    weight = awkward_matrix(208, 256, seed=5)  # 208 rows: three 64-row blocks and a tail of 16
    whole = Int4Linear.from_float(weight, 32)
    monkeypatch.setattr(int8_module, "CHUNK_ELEMENTS", 64 * 256)  # one 64-row block per chunk
    chunked = Int4Linear.from_float(weight, 32)
    assert torch.equal(chunked.packed, whole.packed)
    assert torch.equal(chunked.scales_and_zeros, whole.scales_and_zeros)
    int8_chunked = Int8Linear(weight)
    monkeypatch.setattr(int8_module, "CHUNK_ELEMENTS", 3 * 256)  # rows 3 at a time
    assert torch.equal(Int4Linear.from_float(weight, 32).packed, whole.packed)
    assert torch.equal(Int8Linear(weight).qweight, int8_chunked.qweight)
    monkeypatch.undo()
    assert torch.equal(Int8Linear(weight).qweight, int8_chunked.qweight)
