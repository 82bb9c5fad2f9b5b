"""Scaled RoPE (linear, dynamic, llama3, yarn, Meta's use_scaled_rope) against transformers, beyond the trained length.

Each tiny model is written by transformers' own LlamaForCausalLM with the RoPE dict a real config.json carries, and
loaded through our loader; logits must agree within 1e-4 at every position up to twice the original context.
Tolerance: both sides compute in fp32; the rotations agree to ~1 ulp (same formulas, same operation order), and the
remaining differences are summation re-orderings in matmuls and attention over ~100 terms of magnitude ≤ 1, i.e.
≲ 1e-6 relative on logits of magnitude ~1; 1e-4 leaves two orders of margin while a wrong scaling (checked below to
move logits by > 1e-2) cannot pass.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import DynamicCache
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from llama_core import CheckpointError, ParameterError, load_checkpoint
from llama_core.config import ModelArgs
from llama_core.formats.meta import save_meta_checkpoint
from llama_core.model import KVCache, Transformer
from llama_core.rope import inverse_frequencies

pytestmark = pytest.mark.numerics  # parity with transformers at fp32 tolerances

ORIGINAL = 32  # the "trained" context of the tiny models
LONG = 2 * ORIGINAL  # positions compared: twice the original context
TOLERANCE = 1e-4
SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 2.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": ORIGINAL},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": ORIGINAL},
    "yarn-deepseek": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": ORIGINAL,
                      "mscale": 0.707, "mscale_all_dim": 0.707, "beta_fast": 16, "beta_slow": 2},
}


def tiny_config(rope: dict | None, max_positions: int) -> LlamaConfig:
    # theta 500 instead of 10000 spreads the 8 pair wavelengths over 2π..~1000 positions, so that every
    # scaling has pairs on both sides of its thresholds at this tiny context.
    return LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                       rms_norm_eps=1e-5, rope_parameters={"rope_theta": 500.0, **(rope or {"rope_type": "default"})})


def reference(rope: dict | None, tmp_path, seed: int = 0):
    # As in the real configs: llama3 and yarn state the trained length inside the RoPE dict and the extended one
    # as max_position_embeddings; linear and dynamic are stretched from max_position_embeddings itself.
    extended = rope is not None and "original_max_position_embeddings" in rope
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(rope, LONG if extended else ORIGINAL)).eval()
    with torch.no_grad():  # sharper attention than the 0.02-std init gives, so that positions (RoPE) matter
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8)
            layer.self_attn.k_proj.weight.mul_(8)
    model.save_pretrained(tmp_path / "hf")
    return model, tmp_path / "hf"


def load_long(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # above the trained length on purpose
        return load_checkpoint(path, dtype="fp32", context_length=LONG)


TOKENS = torch.randint(0, 96, (1, LONG), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", list(SCALINGS))
def test_logits_equal_transformers_up_to_twice_the_original_context(name, tmp_path):
    hf, path = reference(SCALINGS[name], tmp_path)
    loaded = load_long(path)
    assert loaded.args.rope_type == SCALINGS[name]["rope_type"]
    with torch.no_grad():
        expected = hf(TOKENS).logits
        ours = loaded.model(TOKENS).logits
    torch.testing.assert_close(ours, expected, atol=TOLERANCE, rtol=0)
    # The scaling must matter where it is claimed to: plain RoPE gives other logits beyond the original context.
    plain, _ = reference(None, tmp_path / "plain")
    with torch.no_grad():
        unscaled = plain(TOKENS).logits
    assert (unscaled[0, ORIGINAL:] - expected[0, ORIGINAL:]).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["dynamic", "yarn", "llama3"])
def test_cached_decoding_beyond_the_original_context_equals_transformers_step_by_step(name, tmp_path):
    """Prefill inside the trained context, then decode one position at a time past it: dynamic NTK recomputes
    its base at every step there (keys already cached keep their rotation), as transformers' cache does."""
    hf, path = reference(SCALINGS[name], tmp_path)
    model = load_long(path).model
    prefill = ORIGINAL - 8
    hf_cache, cache = DynamicCache(config=hf.config), KVCache(model.args, LONG)
    with torch.no_grad():
        expected = [hf(TOKENS[:, :prefill], past_key_values=hf_cache, use_cache=True).logits[:, -1]]
        ours = [model(TOKENS[:, :prefill], cache).logits[:, -1]]
        for t in range(prefill, LONG):
            expected.append(hf(TOKENS[:, t : t + 1], past_key_values=hf_cache, use_cache=True).logits[:, -1])
            ours.append(model(TOKENS[:, t : t + 1], cache).logits[:, -1])
    torch.testing.assert_close(torch.stack(ours), torch.stack(expected), atol=TOLERANCE, rtol=0)


def test_yarn_attention_factor_scales_the_rotations(tmp_path):
    _, path = reference(SCALINGS["yarn"], tmp_path)
    model = load_long(path).model
    magnitude = model.rope(0, 4).abs()
    expected = 0.1 * torch.log(torch.tensor(4.0)) + 1  # the paper's mscale for factor 4
    torch.testing.assert_close(magnitude, torch.full_like(magnitude, float(expected)))


def test_meta_use_scaled_rope_is_llama3_scaling_with_metas_constants(tmp_path):
    """Meta's Llama 3.1 params.json says only `use_scaled_rope: true`; Meta's reference code then applies
    factor 8, low/high frequency factors 1/4 and an original context of 8192 — transformers' llama3 with those."""
    args = ModelArgs(dim=64, n_layers=1, n_heads=4, vocab_size=96, hidden_dim=96, rope_theta=500000.0)
    torch.manual_seed(0)
    out = save_meta_checkpoint(Transformer(args).state_dict(), args, tmp_path / "meta")
    params = {k: v for k, v in json.loads((out / "params.json").read_text()).items() if k != "max_seq_len"}
    params.update(use_scaled_rope=True, vocab_size=96)
    (out / "params.json").write_text(json.dumps(params))
    loaded = load_checkpoint(out)
    assert loaded.args.rope_scaling == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    assert (loaded.context_length, loaded.trained_context_length) == (8192, 131072)
    reference_config = tiny_config(dict(loaded.args.rope_scaling), 131072)
    reference_config.rope_parameters["rope_theta"] = 500000.0
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](reference_config, "cpu")
    ours, _ = inverse_frequencies(16, 500000.0, loaded.args.rope_scaling)
    torch.testing.assert_close(ours, expected, atol=0, rtol=0)


@pytest.mark.parametrize("rope, message", [
    ({"rope_type": "longrope", "factor": 2.0}, (r"config\.json: rope_type 'longrope' is not supported; supported: "
                                                r"default, linear, dynamic, llama3, yarn")),
    ({"rope_type": "llama3", "factor": 8.0}, (r"config\.json: rope_type 'llama3' needs low_freq_factor, "
                                              r"high_freq_factor; found keys")),
    ({"rope_type": "linear", "factor": "2"}, r"config\.json: rope_scaling factor must be a positive number, got '2'"),
    ({"rope_type": "linear"}, r"config\.json: rope_type 'linear' needs factor"),
])
def test_unknown_or_incomplete_rope_scaling_names_the_file_what_is_expected_and_found(rope, message, tmp_path):
    _, path = reference(None, tmp_path)
    data = json.loads((path / "config.json").read_text())
    data["rope_parameters"] = {"rope_theta": 500.0, **rope}
    (path / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


@pytest.mark.parametrize("value", [15, 0, -1, 2.5, True, "64", 2**20 + 1])
def test_context_length_is_validated_before_anything_is_read(value, tmp_path):
    with pytest.raises(ParameterError, match=r"context_length must be an integer in \[16, 1048576\]"):
        load_checkpoint(tmp_path / "does-not-exist", context_length=value)


def test_context_length_above_the_trained_length_warns_and_below_does_not(tmp_path):
    _, path = reference(None, tmp_path)
    with pytest.warns(UserWarning, match=rf"context_length {LONG} is above the {ORIGINAL} positions"):
        loaded = load_checkpoint(path, context_length=LONG)
    assert (loaded.context_length, loaded.trained_context_length, loaded.args.max_seq_len) == (LONG, ORIGINAL, LONG)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        short = load_checkpoint(path, context_length=16)
    assert short.context_length == 16 and short.model.freqs.shape[0] == 16
