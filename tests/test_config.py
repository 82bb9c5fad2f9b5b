import pytest

from llama_core.config import PRESETS, ModelArgs, parameter_count, preset


@pytest.mark.parametrize("name, paper_billions", [
    ("llama-7b", 6.7), ("llama-13b", 13.0), ("llama-33b", 32.5), ("llama-65b", 65.2),
])
def test_parameter_count_matches_llama_paper_table_2(name, paper_billions):
    # The paper truncates to one decimal. The exact 7B count (6.738B, as in the released
    # weights) is 0.57% above "6.7"; the others are within 0.15%.
    count = parameter_count(preset(name))
    assert int(count / 1e8) / 10 == paper_billions
    tolerance = 0.006 if name == "llama-7b" else 0.005
    assert abs(count / 1e9 - paper_billions) / paper_billions < tolerance


@pytest.mark.parametrize("name, ffn, count", [
    ("llama-7b", 11008, 6_738_415_616),
    ("llama-2-70b", 28672, 68_976_648_192),
    ("tinyllama-1.1b", 5632, 1_100_048_384),
    ("stories15m", 768, 15_191_712),
    ("stories110m", 2048, 109_529_856),
])
def test_ffn_width_and_exact_count_for_released_checkpoints(name, ffn, count):
    args = preset(name)
    assert args.ffn_hidden_dim == ffn
    assert parameter_count(args) == count


def test_parameter_count_equals_the_built_model():
    from llama_core.model import Transformer

    for tie in (False, True):
        args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, multiple_of=32,
                         max_seq_len=32, tie_embeddings=tie)
        model = Transformer(args)
        assert parameter_count(args) == sum(p.numel() for p in model.parameters())


def test_presets_are_looked_up_by_exact_name():
    assert preset("llama-7b") is PRESETS["llama-7b"]
    with pytest.raises(KeyError, match="unknown preset 'LLaMA-7B'"):
        preset("LLaMA-7B")


@pytest.mark.parametrize("changes, message", [
    ({"dim": 0}, "dim"),
    ({"dim": 100, "n_heads": 3}, "divisible"),
    ({"n_heads": 32, "n_kv_heads": 5}, "multiple of n_kv_heads"),
])
def test_inconsistent_config_is_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        ModelArgs(**changes)


def test_from_dict_ignores_unknown_metadata():
    args = ModelArgs.from_dict({"dim": 64, "n_layers": 1, "n_heads": 4, "vocab_size": 10, "use_scaled_rope": True})
    assert args.dim == 64 and args.kv_heads == 4
