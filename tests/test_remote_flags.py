"""The operator's side of remote models, offline: the flags and PLAYGROUND_REMOTE, which key goes with which server,
what a bad value says, and how the registry keeps a remote entry apart from the local models (no server needed:
nothing here sends a request)."""

from __future__ import annotations

import pytest

import app
from llama_core.backends import LocalBackend, RemoteConfig, RemoteModel, RemoteModelInfo, RemoteServer
from llama_core.errors import CheckpointError
from playground.registry import ModelChoice, ModelRegistry, discover
from playground.remote_models import KEY_ENV_ENV, REMOTE_ENV, TIMEOUT_ENV, remote_label, server_origin

LOCAL = "playground-1m (bundled)"


@pytest.fixture(autouse=True)
def no_remote_env(monkeypatch):
    for name in (REMOTE_ENV, KEY_ENV_ENV, TIMEOUT_ENV, "PLAYGROUND_MODELS"):
        monkeypatch.delenv(name, raising=False)


def configs(*argv: str) -> list[RemoteConfig]:
    return app.parse_args(list(argv)).remote_configs


def test_each_key_env_goes_with_the_remote_before_it_and_one_given_first_with_every_other():
    found = configs("--remote-key-env", "ALL_KEY", "--remote", "http://a:1", "--remote", "http://b:2/v1",
                    "--remote-key-env", "B_KEY", "--remote", "https://c.example/proxy", "--remote-timeout", "7.5")
    assert [(c.url, c.api_key_env, c.timeout_s) for c in found] == [
        ("http://a:1", "ALL_KEY", 7.5), ("http://b:2", "B_KEY", 7.5), ("https://c.example/proxy", "ALL_KEY", 7.5)]
    assert [c.api_key_env for c in configs("--remote", "http://a:1")] == [None]  # no key unless one is named


def test_a_space_names_its_servers_key_and_timeout_in_the_environment(monkeypatch):
    monkeypatch.setenv(REMOTE_ENV, "http://gpu-box:8000/v1  http://other:11434")
    monkeypatch.setenv(KEY_ENV_ENV, "VLLM_KEY")
    monkeypatch.setenv(TIMEOUT_ENV, "30")
    found = configs("--remote", "http://flag:1")
    assert [(c.url, c.api_key_env, c.timeout_s) for c in found] == [
        ("http://flag:1", "VLLM_KEY", 30.0), ("http://gpu-box:8000", "VLLM_KEY", 30.0),
        ("http://other:11434", "VLLM_KEY", 30.0)]


def test_a_space_offers_checkpoints_named_in_the_environment_and_flags_add_to_them(monkeypatch):
    monkeypatch.setenv("PLAYGROUND_MODELS", "org/llama-gguf:Q4_0  models/extra")
    assert app.parse_args(["--model", "flag-model"]).model == ["org/llama-gguf:Q4_0", "models/extra", "flag-model"]
    monkeypatch.delenv("PLAYGROUND_MODELS")
    assert app.parse_args([]).model == []


@pytest.mark.parametrize("argv, message", [
    (["--remote", "ftp://host"], "--remote: url must be an http(s)://host[:port][/path] URL"),
    (["--remote", "http://user:secret@host:1"], "without user name, password"),
    (["--remote", "http://a:1", "--remote-key-env", "A", "--remote-key-env", "B"], "has a --remote-key-env already"),
    (["--remote-key-env", "NOT-A-NAME"], "--remote-key-env must name an environment variable"),
    (["--remote-timeout", "0"], "--remote-timeout: must be a number of seconds > 0, got '0'"),
    (["--remote", "http://a:1", "--remote-timeout", "1e9"], "--remote-timeout: timeout_s must be a number of seconds"),
])
def test_a_bad_remote_flag_stops_the_app_with_a_message_naming_it(capsys, argv, message):
    with pytest.raises(SystemExit):
        app.parse_args(argv)
    error = capsys.readouterr().err
    assert message in error and "secret" not in error  # a password in a URL is never echoed


def test_labels_name_the_model_and_where_it_runs():
    assert server_origin("http://127.0.0.1:8000/v1/") == "127.0.0.1:8000"
    assert remote_label("meta-llama/Llama-3.1-70B", "https://gpu.example/vllm/v1") == \
        "meta-llama/Llama-3.1-70B (remote: gpu.example/vllm)"


def remote_registry() -> tuple[ModelRegistry, str]:
    """The bundled models plus one remote entry whose server is never asked anything."""
    server = RemoteServer(RemoteConfig("http://127.0.0.1:9"))
    model = RemoteModel(server, RemoteModelInfo("llama-70b", context_length=8192))
    label = remote_label("llama-70b", server.url)
    return ModelRegistry(discover(None, [], [ModelChoice(label, server.url, "remote")]),
                         remote_models={label: model}), label


def test_a_remote_entry_is_listed_after_the_local_models_and_loads_nothing():
    registry, label = remote_registry()
    labels = registry.labels
    assert labels.index(LOCAL) < labels.index(label) < labels.index(next(x for x in labels if "LLaMA-7B" in x))
    assert registry.default != label and registry.context_of(label) == 8192
    assert registry.backend(label) is registry.remote(label)  # the server's model, nothing loaded
    assert not registry.is_loaded(label) and registry._loaded == {}
    with pytest.raises(CheckpointError, match="needs the model's weights, so it needs a local model"):
        registry.load(label)  # what the weight-needing views are told
    assert isinstance(registry.backend(LOCAL), LocalBackend) and list(registry._loaded) == [LOCAL]


def test_choosing_a_remote_model_keeps_the_loaded_local_models_and_describes_the_server():
    from playground.handlers import make_handlers

    registry, label = remote_registry()
    registry.load(LOCAL)
    info, slider = make_handlers(registry)["switch_model"](label, 96, progress=lambda *a, **k: None)
    assert list(registry._loaded) == [LOCAL]  # still loaded, ready to switch back
    assert "served by http://127.0.0.1:9" in info and "model `llama-70b`" in info and "context 8192" in info
    assert slider["maximum"] == 8191
