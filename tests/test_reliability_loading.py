"""Checklist B (docs/reliability.md): broken, hostile or mismatched checkpoints in a models
directory. Each is refused with a message that names the file and the problem: by the library,
by the CLI (exit code 2), and by the app when the model menu is switched to it (the /load_model
event) or a generation asks for it; after each, the model that was loaded still generates.
One app (python app.py --models-dir <the broken checkpoints>) for the module."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import struct
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import torch

from app_server import FAST_MODEL, REPO, AppServer, api_client, raw_join, rejected_fields
from browser import launch, require_chromium
from checkpoint_fixtures import (  # noqa: F401 (pytest fixtures)
    copy_checkpoint,
    edit_json,
    edit_safetensors,
    make_checkpoint,
    references,
    tiny_meta_checkpoint,
)
from llama_core import cli
from llama_core.errors import CheckpointError, TokenizerError
from llama_core.loading import load_checkpoint

OUTPUT = REPO / "test-output"
BUNDLED_TOKENIZER = REPO / "models" / "tokenizer.model"


class RunsShellCommand:
    """Unpickling this calls os.system, as a hostile checkpoint would."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def build_bad_models(root: Path, make_checkpoint) -> Path:
    """A models directory holding one checkpoint per fault (names are the menu labels without " (local)")."""
    models = root / "models"
    models.mkdir()

    def hf(name: str, layout: str = "safetensors") -> Path:
        return copy_checkpoint(make_checkpoint("gqa", layout), models / name)

    def meta(name: str, shards: int = 1) -> Path:
        return copy_checkpoint(make_checkpoint("gqa", f"meta-{shards}"), models / name)

    evil = hf("evil-pickle", "bin")
    state = torch.load(evil / "pytorch_model.bin", weights_only=True)
    state["payload"] = RunsShellCommand(f"touch {shlex.quote(str(root / 'pickle-ran'))}")
    torch.save(state, evil / "pytorch_model.bin")
    truncate(hf("truncated-safetensors") / "model.safetensors")
    huge = hf("huge-header") / "model.safetensors"
    huge.write_bytes(struct.pack("<Q", 2**40) + huge.read_bytes()[8:])
    truncate(meta("truncated-zip") / "consolidated.00.pth")
    (meta("meta-missing-shard", shards=2) / "consolidated.01.pth").unlink()
    (meta("meta-no-params") / "params.json").unlink()
    (meta("meta-bad-json") / "params.json").write_text('{"dim": 32,')
    vocab_from_tokenizer = tiny_meta_checkpoint(models / "meta-vocab-minus-one", vocab_size=96)
    edit_json(vocab_from_tokenizer / "params.json", lambda params: params.update(vocab_size=-1))
    edit_json(hf("shape-mismatch") / "config.json", lambda config: config.update(num_key_value_heads=1))
    bias = "model.layers.0.self_attn.q_proj.bias"
    edit_safetensors(hf("unexpected-tensor") / "model.safetensors", lambda t: t.update({bias: torch.zeros(32)}))
    edit_safetensors(hf("missing-tensor") / "model.safetensors", lambda t: t.pop("model.norm.weight"))
    norm = "model.layers.1.input_layernorm.weight"
    edit_safetensors(hf("nan-weights") / "model.safetensors", lambda t: t[norm].fill_(float("nan")))
    hf("no-tokenizer")  # an intact checkpoint, but nothing to tokenize with
    (hf("corrupt-tokenizer") / "tokenizer.model").write_bytes(os.urandom(2048))
    shutil.copy(BUNDLED_TOKENIZER, hf("vocab-mismatch") / "tokenizer.model")
    llama2c = make_checkpoint("gqa", "llama2c-v0")
    shutil.copy(llama2c, models / "truncated.bin")
    truncate(models / "truncated.bin", keep=0.9)
    shutil.copy(llama2c, models / "wrong-header.bin")
    data = (models / "wrong-header.bin").read_bytes()
    (models / "wrong-header.bin").write_bytes(struct.pack("<7i", 32, 48, 2, 5, 5, 96, 64) + data[28:])
    shutil.copy(make_checkpoint("gqa", "meta-1") / "consolidated.00.pth", models / "pytorch-zip.bin")
    (models / "escape").symlink_to("/etc")  # a symlink out of the directory: not a checkpoint, never offered
    return models


@pytest.fixture(scope="module")
def bad_models(make_checkpoint, tmp_path_factory):
    return build_bad_models(tmp_path_factory.mktemp("bad-models"), make_checkpoint)


@pytest.fixture(scope="module")
def server(bad_models):
    OUTPUT.mkdir(exist_ok=True)
    app = AppServer("--models-dir", str(bad_models), log_path=OUTPUT / "app-loading.log").wait_ready()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def client(server):
    return api_client(server.url)


def run_cli(*args: str, capsys) -> tuple[int, str]:
    code = cli.main(list(args))
    return code, capsys.readouterr().err


def assert_serves(client) -> None:
    result = client.predict("In the beginning", model=FAST_MODEL, max_new_tokens=3, temperature=0,
                            api_name="/generate")
    assert result["timing"]["tokens"] == 3 and result["error"] is None


def refused_everywhere(bad_models, client, capsys, name: str, message: str, library: bool = True) -> None:
    """`message` (a regex) from the library, the CLI and the app for the checkpoint `name`; then the
    model loaded before the failed switch still generates."""
    from gradio_client.exceptions import AppError

    path = bad_models / name
    if library:
        with pytest.raises((CheckpointError, TokenizerError), match=message):
            load_checkpoint(path)
    code, err = run_cli("generate", "--model", str(path), "--prompt", "In the beginning", "--max-new-tokens", "1",
                        capsys=capsys)
    assert code == 2 and err.startswith("error: ") and re.search(message, err), err
    label = f"{name} (local)"
    client.predict(FAST_MODEL, 96, api_name="/load_model")
    with pytest.raises(AppError, match=rf"Could not load {re.escape(label)}: .*{message}.*"
                                       r"The previous model stays loaded\."):
        client.predict(label, 96, api_name="/load_model")
    with pytest.raises(AppError, match=message):  # asking a generation for it says the same
        client.predict("In the beginning", model=label, max_new_tokens=2, api_name="/generate")
    assert_serves(client)


def test_B1_malicious_pickle_is_refused_and_never_run(bad_models, client, capsys):
    refused_everywhere(bad_models, client, capsys, "evil-pickle",
                       r"pytorch_model\.bin: unsupported or unsafe checkpoint.*weights_only=True.*system")
    assert not (bad_models.parent / "pickle-ran").exists()


def test_B2_torch_below_the_floor_refuses_pickles_but_loads_safetensors(make_checkpoint, monkeypatch, capsys):
    from playground.dependency_floors import dependency_problems

    monkeypatch.setattr(torch, "__version__", "2.9.1+cpu")
    pickled = make_checkpoint("gqa", "bin")
    message = r"pytorch_model\.bin: pickled checkpoints need torch >= 2\.10.*this is torch 2\.9\.1\+cpu"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(pickled)
    code, err = run_cli("info", "--model", str(pickled), capsys=capsys)
    assert code == 2 and re.search(message, err)
    assert load_checkpoint(make_checkpoint("gqa", "safetensors")).n_params > 0
    fatal, warn = dependency_problems("6.31.0", torch.__version__, has_safetensors=True)
    assert not fatal and "torch 2.9.1+cpu is older than 2.10: pickled checkpoints" in warn[0]


def test_B3_a_missing_model_parallel_shard_is_named(bad_models, client, capsys):
    refused_everywhere(bad_models, client, capsys, "meta-missing-shard",
                       r"split into 2 model-parallel shards but only 1 found; missing: consolidated\.01\.pth")


def test_B4_meta_params_missing_invalid_or_vocab_from_an_absent_tokenizer(bad_models, client, capsys):
    refused_everywhere(bad_models, client, capsys, "meta-no-params", r"params\.json: file not found")
    refused_everywhere(bad_models, client, capsys, "meta-bad-json", r"params\.json: invalid JSON")
    refused_everywhere(bad_models, client, capsys, "meta-vocab-minus-one",
                       r"vocab_size is -1.*no tokenizer\.model was found")


def test_B5_missing_and_unexpected_tensors_are_listed(bad_models, client, capsys):
    refused_everywhere(bad_models, client, capsys, "unexpected-tensor",
                       r"1 unexpected tensor\(s\): 'model\.layers\.0\.self_attn\.q_proj\.bias' "
                       r"\(in model\.safetensors\)")
    refused_everywhere(bad_models, client, capsys, "missing-tensor", r"1 tensor\(s\) missing: 'norm\.weight'")


def test_B6_shape_mismatch_names_file_tensor_and_both_shapes(bad_models, client, capsys):
    refused_everywhere(bad_models, client, capsys, "shape-mismatch",
                       r"model\.safetensors: tensor 'layers\.0\.attention\.wk\.weight' has wrong shape: "
                       r"expected \(8, 32\) from config, got \(16, 32\) in file")


def test_B7_truncated_safetensors_or_a_huge_header(bad_models, client, capsys):
    refused_everywhere(bad_models, client, capsys, "truncated-safetensors",
                       r"model\.safetensors: file is truncated/corrupt")
    refused_everywhere(bad_models, client, capsys, "huge-header",
                       r"model\.safetensors: file is truncated/corrupt: safetensors header claims 1099511627776 bytes")


def test_B7_a_broken_checkpoint_chosen_in_the_page_shows_the_error_and_keeps_the_model(server):
    """The same fault as the user meets it: the menu returns to the model that is still loaded."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server.url)
        page.wait_for_selector("#model-info strong", timeout=60_000)
        loaded = page.inner_text("#model-info strong")
        page.get_by_label("Model size").click()
        page.get_by_role("option").filter(has_text="truncated-safetensors (local)").first.click()
        page.get_by_text("Could not load truncated-safetensors (local)").first.wait_for(timeout=30_000)
        assert "file is truncated/corrupt" in page.get_by_text("Could not load").first.inner_text()
        menu = page.get_by_label("Model size").first
        deadline = time.monotonic() + 30
        while menu.input_value() != loaded and time.monotonic() < deadline:
            time.sleep(0.1)
        assert menu.input_value() == loaded  # back on the model that is still loaded
        page.fill("#prompt textarea", "In the beginning")
        page.get_by_label("Max new tokens").first.fill("5")
        page.click("#generate")
        page.wait_for_function("document.querySelector('#status')?.innerText.includes('stop:')", timeout=60_000)
        assert page.input_value("#output textarea")
        browser.close()


def test_B8_truncated_zip_checkpoint(bad_models, client, capsys):
    refused_everywhere(bad_models, client, capsys, "truncated-zip",
                       r"consolidated\.00\.pth: truncated or corrupt zip archive")


def test_B9_llama2c_file_truncated_or_with_an_impossible_header(bad_models, client, capsys):
    size = (bad_models / "truncated.bin").stat().st_size
    refused_everywhere(bad_models, client, capsys, "truncated.bin",
                       rf"truncated\.bin: header says \d+ bytes, file has {size} \(truncated")
    refused_everywhere(bad_models, client, capsys, "wrong-header.bin",
                       r"wrong-header\.bin: not a valid llama2\.c header \(dim=32, .*n_heads=5")


def test_B10_formats_are_told_apart_by_content_not_extension(bad_models, client, capsys, make_checkpoint, tmp_path):
    refused_everywhere(bad_models, client, capsys, "pytorch-zip.bin",
                       r"pytorch-zip\.bin: this is a PyTorch \(zip\) file, not a llama2\.c checkpoint")
    disguised = tmp_path / "weights.pth"  # a llama2.c file under a PyTorch name still loads as llama2.c
    shutil.copy(make_checkpoint("gqa", "llama2c-v1"), disguised)
    assert load_checkpoint(disguised).format == "llama2c"
    code, _ = run_cli("info", "--model", str(disguised), capsys=capsys)
    assert code == 0


def test_B11_missing_corrupt_or_mismatched_tokenizer(bad_models, client, capsys):
    refused_everywhere(bad_models, client, capsys, "corrupt-tokenizer",
                       r"tokenizer\.model: not a valid SentencePiece model")
    refused_everywhere(bad_models, client, capsys, "vocab-mismatch",
                       r"tokenizer has 4096 tokens but the model's vocab_size is 96")
    # Without a tokenizer the library still loads the weights (for `info`); generating needs one.
    refused_everywhere(bad_models, client, capsys, "no-tokenizer", r"no tokenizer\.model", library=False)


def test_B12_a_checkpoint_larger_than_free_memory_is_refused_from_its_headers(monkeypatch):
    import gradio as gr

    from playground import registry as registry_module
    from playground.handlers import make_handlers

    registry = registry_module.ModelRegistry(registry_module.discover(None, []))
    handlers = make_handlers(registry)
    registry.load(FAST_MODEL)
    loads = []
    monkeypatch.setattr(registry_module, "load_model", lambda *a, **k: loads.append(a) or load_checkpoint(*a, **k))
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=3 * 2**20))
    with pytest.raises(gr.Error, match=r"Could not load playground-4m \(bundled\): playground-4m \(bundled\) needs "
                                       r"~7 MiB of memory for its weights, 3 MiB is free"):
        handlers["switch_model"]("playground-4m (bundled)", 96)
    assert not loads and registry.is_loaded(FAST_MODEL)  # refused before reading a single tensor
    result = list(handlers["generate_json"]("In the beginning", FAST_MODEL, 3))[-1]
    assert result["timing"]["tokens"] == 3
    # A big model that fits only once the other big ones are gone replaces them.
    monkeypatch.setattr(registry_module, "KEEP_LOADED_BYTES", 1)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=6 * 2**20))
    handlers["switch_model"]("playground-4m (bundled)", 96)
    assert registry.is_loaded("playground-4m (bundled)") and not registry.is_loaded(FAST_MODEL)


def test_B13_nan_weights_are_refused(bad_models, client, capsys):
    refused_everywhere(bad_models, client, capsys, "nan-weights",
                       r"model\.safetensors: tensor 'layers\.1\.attention_norm\.weight' contains NaN or Inf")


def test_B15_no_path_can_be_typed_and_symlinks_out_are_not_offered(server, client, bad_models):
    from gradio_client.exceptions import AppError

    labels = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/load_model"]["parameters"]
    choices = labels[0]["type"]["enum"]
    assert "escape (local)" not in choices and "truncated-safetensors (local)" in choices
    answers = []
    for path in (REPO / "models" / "playground-4m", bad_models / "does-not-exist", "/etc"):
        with pytest.raises(AppError) as raised:
            client.predict(str(path), 96, api_name="/load_model")
        answers.append(str(raised.value).replace(str(path), "<path>"))
        status, body, _ = raw_join(server.url, "/generate", [
            "In the beginning", str(path), 3, 0.0, 0, 1.0, 0.0, 1.0, 1, "", "plain"])
        assert status == 422 and rejected_fields(body)["model"].startswith("model must be one of")
    assert len(set(answers)) == 1  # the same answer whether or not the path exists
    assert_serves(client)
