"""The model menu's remote entries: the models of each server the operator named (`--remote URL`,
or PLAYGROUND_REMOTE on a Space), listed once at startup from its /v1/models.

Only the operator names servers: a page or API request can pick one of the listed entries, never
give a URL. A server that cannot be listed does not stop the app: the log says why, and the menu
offers an entry for it whose choice shows the same message. An API key is named by its environment
variable only (`--remote-key-env NAME`); its value is read by the client at request time and never
passes through here, the log, the page or a report.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from llama_core.backends import RemoteConfig, RemoteError, RemoteModel, RemoteServer
from llama_core.errors import ParameterError

from .registry import ModelChoice

REMOTE_ENV = "PLAYGROUND_REMOTE"  # space-separated server URLs (a Space's variables are its command line)
KEY_ENV_ENV = "PLAYGROUND_REMOTE_KEY_ENV"  # the name of the secret holding the key, for those servers
TIMEOUT_ENV = "PLAYGROUND_REMOTE_TIMEOUT"

log = logging.getLogger(__name__)


@dataclass
class RemoteSpec:
    """One `--remote` as given: its URL and the environment variable naming its key (None: no key)."""

    url: str
    key_env: str | None = None


class AddRemote(argparse.Action):
    """`--remote URL`: one more server, in the order given."""

    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), RemoteSpec(value)])


class SetRemoteKeyEnv(argparse.Action):
    """`--remote-key-env NAME`: the key of the `--remote` just before it; given before any `--remote`, the key of
    every server that names none of its own."""

    def __call__(self, parser, namespace, value, option_string=None):
        if not value.isidentifier():
            parser.error(f"--remote-key-env must name an environment variable (letters, digits, _), got {value!r}")
        remotes = getattr(namespace, "remote", None) or []
        if not remotes:
            namespace.remote_key_env = value
        elif remotes[-1].key_env is not None:
            parser.error(f"--remote {remotes[-1].url} has a --remote-key-env already ({remotes[-1].key_env}); "
                         "give one after each --remote")
        else:
            remotes[-1].key_env = value


def timeout_seconds(text: str) -> float:
    """--remote-timeout's value: seconds > 0 (RemoteConfig checks the upper end)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--remote", action=AddRemote, default=[], metavar="URL",
                        help="an OpenAI-compatible server (vLLM, TGI, llama.cpp server, Ollama) whose models the menu "
                             f"offers (repeatable; or set {REMOTE_ENV} to space-separated URLs)")
    parser.add_argument("--remote-key-env", action=SetRemoteKeyEnv, default=os.environ.get(KEY_ENV_ENV), metavar="NAME",
                        help="the environment variable holding the API key of the --remote just before it (before any "
                             f"--remote: of every server without one of its own; or set {KEY_ENV_ENV}); the key is "
                             "sent as a bearer token and never shown or logged")
    parser.add_argument("--remote-timeout", type=timeout_seconds, default=os.environ.get(TIMEOUT_ENV, "60"),
                        metavar="SECONDS", help="how long a remote server may stay silent mid-answer (default 60)")


def remote_configs(args: argparse.Namespace) -> list[RemoteConfig]:
    """The checked configuration of every server given (flags first, then PLAYGROUND_REMOTE); a bad URL or
    timeout raises ParameterError naming it."""
    specs = [*args.remote, *(RemoteSpec(url) for url in os.environ.get(REMOTE_ENV, "").split())]
    configs = []
    for spec in specs:
        key_env = spec.key_env or args.remote_key_env
        configs.append(RemoteConfig(spec.url, api_key_env=key_env, timeout_s=args.remote_timeout))
        if key_env and not os.environ.get(key_env):
            log.warning("--remote %s: the environment variable %s is not set; requests go without an API key",
                        spec.url, key_env)
    return configs


def server_origin(url: str) -> str:
    """host:port and path of a server URL, without the /v1 suffix: how the menu names where a model runs."""
    parts = urlsplit(url)
    return parts.netloc + parts.path.rstrip("/").removesuffix("/v1")


def remote_label(model_id: str, url: str) -> str:
    return f"{model_id} (remote: {server_origin(url)})"


def sentence(error: Exception) -> str:
    text = str(error).strip()
    return text if text.endswith((".", "?", "!")) else text + "."


def list_remote(configs: list[RemoteConfig]) -> tuple[list[ModelChoice], dict[str, RemoteModel]]:
    """Each server's models as menu entries and the RemoteModel behind each label; a server not listed
    becomes an entry whose hint says why (the app starts all the same)."""
    choices: list[ModelChoice] = []
    models: dict[str, RemoteModel] = {}
    for config in configs:
        server = RemoteServer(config)
        try:
            infos = server.list_models()
        except (RemoteError, ParameterError) as error:
            log.warning("remote server %s: its models could not be listed: %s", config.url, error)
            choices.append(ModelChoice(
                f"{server_origin(config.url)} (remote: not reachable)", None, "remote",
                hint=f"The server {config.url} did not list its models when the app started: {sentence(error)} "
                     "Once it answers, restart the app to offer its models."))
            continue
        if not infos:
            log.warning("remote server %s lists no models", config.url)
        for info in infos:
            label = remote_label(info.id, config.url)
            if label in models:
                log.warning("remote server %s lists %r twice; offered once", config.url, info.id)
                continue
            models[label] = RemoteModel(server, info)
            choices.append(ModelChoice(label, config.url, "remote"))
        log.info("remote server %s: %d model(s): %s", config.url, len(infos), ", ".join(i.id for i in infos))
    return choices, models
