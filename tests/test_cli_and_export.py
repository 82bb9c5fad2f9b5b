import json
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import tiny_args
from numerics import FP32_REORDER, FP32_VS_REFERENCE, assert_close_to_scale
from llama_core.cli import main
from llama_core.formats.hf import save_hf_checkpoint
from llama_core.loading import load_checkpoint
from llama_core.model import Transformer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model, tokenizer_path):
    """The tiny model saved as a Hugging Face directory with its tokenizer and a model card."""
    out = tmp_path_factory.mktemp("ckpt")
    save_hf_checkpoint(tiny_model.state_dict(), tiny_model.args, out)
    shutil.copy(tokenizer_path, out / "tokenizer.model")
    (out / "model_card.json").write_text(json.dumps({"name": "tiny-test", "val_loss": 1.23}))
    return out


@pytest.mark.numerics
@pytest.mark.parametrize("tie", [False, True])
def test_saved_hf_directory_loads_in_transformers_with_the_same_logits(tmp_path, tie):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = Transformer(tiny_args(300, tie_embeddings=tie)).eval()
    save_hf_checkpoint(model.state_dict(), model.args, tmp_path)
    tokens = torch.randint(0, 300, (1, 10))
    with torch.no_grad():
        ours = model(tokens).logits
        theirs = LlamaForCausalLM.from_pretrained(tmp_path).eval()(tokens).logits
        again = load_checkpoint(tmp_path, fast_layout=False).model(tokens).logits
        fast = load_checkpoint(tmp_path).model(tokens).logits  # fused, re-strided: other summation order
    assert_close_to_scale(theirs, ours, FP32_VS_REFERENCE, "saved HF directory in transformers")
    torch.testing.assert_close(again, ours, atol=0, rtol=0)  # the same modules, the same kernels: bit for bit
    assert_close_to_scale(fast, ours, FP32_REORDER, "saved HF directory, fast layout")


def test_generate_json_streams_one_object_per_token(checkpoint, capsys):
    code = main(["generate", "--model", str(checkpoint), "--prompt", "Alice was", "--temperature", "0",
                 "--max-new-tokens", "6", "--json", "--top-n", "3"])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 6
    for entry in lines:
        assert set(entry) >= {"token_id", "text", "logprob", "top"}
        assert entry["logprob"] <= 0 and len(entry["top"]) >= 3
        token_id, text, prob = entry["top"][0]
        assert isinstance(token_id, int) and isinstance(text, str) and 0 < prob <= 1
    assert lines[-1]["stop_reason"] == "length"


def test_generate_text_matches_json_text(checkpoint, capsys):
    common = ["generate", "--model", str(checkpoint), "--prompt", "Alice was", "--temperature", "0.9",
              "--seed", "7", "--max-new-tokens", "12"]
    main(common)
    text = capsys.readouterr().out
    main(common + ["--json"])
    pieces = [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()]
    assert text == "".join(pieces) + "\n"


def test_bad_parameter_is_a_one_line_error_and_exit_code_2(checkpoint, capsys):
    assert main(["generate", "--model", str(checkpoint), "--prompt", "x", "--temperature", "-0.5"]) == 2
    assert capsys.readouterr().err == "error: temperature must be a finite number in [0, 2] (0 = greedy), got -0.5\n"
    assert main(["generate", "--model", str(checkpoint / "missing"), "--prompt", "x"]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_info_shows_format_parameters_and_model_card(checkpoint, capsys):
    assert main(["info", "--model", str(checkpoint), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "hf" and info["dtype"] == "float32"
    assert info["parameters"] == sum(p.numel() for p in load_checkpoint(checkpoint).model.parameters())
    assert info["config"]["dim"] == 64 and info["model_card"]["name"] == "tiny-test"


def test_module_entry_point_runs(checkpoint):
    done = subprocess.run([sys.executable, "-m", "llama_core", "info", "--model", str(checkpoint)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "format: hf" in done.stdout and "val_loss: 1.23" in done.stdout


def test_generate_with_int8_weights(checkpoint, capsys):
    code = main(["generate", "--model", str(checkpoint), "--prompt", "Alice was", "--temperature", "0",
                 "--max-new-tokens", "4", "--json", "--quantize", "int8"])
    assert code == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
