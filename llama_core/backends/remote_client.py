"""An OpenAI-compatible server (vLLM, TGI, llama.cpp's server, llama-cpp-python, Ollama) over HTTP.

Requests go out with httpx, one short-lived client per request: closing a stream's generator closes its
connection, which is how a server learns that Stop was pressed. Server-sent events are read line by line and
each token is yielded as soon as the next event confirms it (see `remote_events.TokenAssembler`).

Faults become a `RemoteError` whose message names the server, what happened and what to do. The API key is read
from its environment variable when a request is made and goes only into that request's Authorization header:
no object here stores it, so no repr, message, log or report can show it.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

from ..sampling import SamplingParams
from .remote_config import RemoteConfig
from .remote_events import RemoteToken, StreamFault, TokenAssembler, logprob_entries, error_message, read_events

MAX_ERROR_BODY = 65536  # bytes of an error response read for its message
SHOWN_BODY_CHARS = 300


class RemoteError(RuntimeError):
    """A remote server failed a request; str() is the message for the user (the server named, never the key).

    Tokens a stream yielded before the failure stay valid (`partial_ok`): the caller keeps the partial run.
    """

    partial_ok = True

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the HTTP status of a refused request; None for a connection or stream fault


@dataclass(frozen=True)
class RemoteModelInfo:
    """A model a server lists at /v1/models."""

    id: str
    owned_by: str | None = None
    context_length: int | None = None  # vLLM's max_model_len, llama.cpp's meta.n_ctx(_train); None if not said
    meta: dict = field(default_factory=dict, compare=False)


def sampling_fields(params: SamplingParams, seed: int | None = None) -> dict:
    """The sampler as request fields. The OpenAI API has temperature/top_p/penalties/seed; vLLM, llama.cpp and
    llama-cpp-python also read top_k and min_p, and repetition_penalty (vLLM, TGI) or repeat_penalty (llama.cpp).
    Every field is sent even at its "off" value: llama.cpp's own defaults are top_k=40, min_p=0.05 and
    llama-cpp-python's repeat_penalty=1.1, which would otherwise sample from another distribution than asked."""
    body = {"max_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p,
            "presence_penalty": params.presence_penalty, "frequency_penalty": params.frequency_penalty,
            "top_k": max(params.top_k, 0), "min_p": params.min_p,
            "repetition_penalty": params.repetition_penalty, "repeat_penalty": params.repetition_penalty}
    seed = params.seed if seed is None else seed
    if seed is not None:
        body["seed"] = seed
    if params.stop:
        body["stop"] = list(params.stop)
    return body


class RemoteServer:
    """One server, as the operator configured it (see `RemoteConfig`)."""

    def __init__(self, config: RemoteConfig):
        if not isinstance(config, RemoteConfig):
            raise TypeError(f"RemoteServer takes a RemoteConfig, got {type(config).__name__}")
        self.config = config
        self.url = config.url

    def __repr__(self) -> str:
        return f"RemoteServer({self.config!r})"

    # -- the API -----------------------------------------------------------------------------------------------
    def list_models(self) -> list[RemoteModelInfo]:
        """The models the server serves, from GET /v1/models."""
        payload = self._json("GET", "/models", None)
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise RemoteError(f"the server {self.url} answered /v1/models without a list of models: {_cut(payload)}")
        return [_model_info(entry) for entry in data if isinstance(entry, dict) and isinstance(entry.get("id"), str)]

    def complete_stream(self, model_id: str, prompt: str | list[int], params: SamplingParams, top_n: int,
                        seed: int | None = None) -> Iterator[RemoteToken]:
        """Stream a completion of `prompt` from POST /v1/completions, each token with its top-n log-probabilities.

        `seed`: sent instead of `params.seed` (a caller that drew a seed for a random run, to record it); with
        neither, the server picks one. Closing the generator closes the connection.
        """
        body = {"model": model_id, "prompt": prompt, "stream": True, "logprobs": top_n,
                **sampling_fields(params, seed)}
        return self._stream("/completions", body)

    def chat_stream(self, model_id: str, messages: list[dict], params: SamplingParams, top_n: int,
                    seed: int | None = None) -> Iterator[RemoteToken]:
        """Stream the assistant's reply from POST /v1/chat/completions (the server applies its chat template)."""
        body = {"model": model_id, "messages": messages, "stream": True, "logprobs": True, "top_logprobs": top_n,
                **sampling_fields(params, seed)}
        return self._stream("/chat/completions", body)

    def prompt_logprobs(self, model_id: str, text: str, top_n: int) -> list[RemoteToken] | None:
        """The prompt's tokens with their log-probabilities (the first has none), or None if the server gives none."""
        found = self.prompt_logprobs_or_reason(model_id, text, top_n)
        return found if isinstance(found, list) else None

    def prompt_logprobs_or_reason(self, model_id: str, text: str, top_n: int) -> list[RemoteToken] | str:
        """As `prompt_logprobs`, with the reason instead of None.

        Asks for `echo` with one new token (llama-cpp-python, vLLM and OpenAI's legacy API echo the prompt's
        tokens with their log-probabilities; vLLM fills them from its prompt_logprobs). A server that refuses
        echo (4xx) or ignores it has none to give; faults of the server itself still raise RemoteError.
        """
        body = {"model": model_id, "prompt": text, "max_tokens": 1, "echo": True, "logprobs": top_n,
                "temperature": 0.0, "stream": False}
        try:
            payload = self._json("POST", "/completions", body)
        except RemoteError as error:
            if error.status is not None and error.status < 500 and error.status not in (401, 403, 404, 429):
                return f"the server refused a request for the prompt's log-probabilities ({error})"
            raise
        choices = payload.get("choices") if isinstance(payload, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        try:
            entries = logprob_entries(choice.get("logprobs"), "")
        except StreamFault as fault:
            return f"the server's answer had unreadable log-probabilities ({fault})"
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
        generated = usage.get("completion_tokens")
        if not isinstance(generated, int):
            generated = 1 if choice.get("finish_reason") == "length" else 0
        prompt_entries = entries[: max(0, len(entries) - generated)]
        if not prompt_entries or all(lp is None for _, lp, _, _ in prompt_entries):
            return (f"the server {self.url} returns no log-probabilities for the prompt's tokens "
                    "(it does not support echo with logprobs)")
        fingerprint = payload.get("system_fingerprint") if isinstance(payload.get("system_fingerprint"), str) else None
        return [RemoteToken(piece, lp, top, None, server_id, fingerprint)
                for piece, lp, top, server_id in prompt_entries]

    # -- HTTP --------------------------------------------------------------------------------------------------
    def _headers(self, stream: bool) -> dict:
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        name = self.config.api_key_env
        if name is not None:
            key = os.environ.get(name, "")
            if not key:
                raise RemoteError(f"the server {self.url} is configured with an API key from the environment "
                                  f"variable {name}, which is not set (or empty) here")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _redact(self, text: str) -> str:
        """A server may echo the key it rejected; it never reaches a message."""
        name = self.config.api_key_env
        key = os.environ.get(name, "") if name else ""
        return text.replace(key, "***") if len(key) >= 4 else text

    @contextlib.contextmanager
    def _response(self, method: str, path: str, body: dict | None, stream: bool) -> Iterator[httpx.Response]:
        """An open 2xx response to the request, closed on exit; 429 (and 503 with Retry-After) retried first."""
        headers = self._headers(stream)
        timeout = httpx.Timeout(self.config.timeout_s, connect=self.config.connect_timeout_s)
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            for attempt in range(self.config.max_retries + 1):
                request = client.build_request(method, self.config.api_url + path, json=body, headers=headers)
                try:
                    response = client.send(request, stream=True)
                except httpx.TransportError as error:
                    raise self._transport_error(error, None) from None
                if response.status_code < 300:
                    try:
                        yield response
                    finally:
                        response.close()
                    return
                detail = self._error_detail(response)
                wait = self._retry_wait(response, attempt)
                if wait is None or attempt == self.config.max_retries:
                    retried = f" (after {attempt} retries)" if attempt else ""
                    raise RemoteError(f"the server {self.url} answered HTTP {response.status_code} "
                                      f"{response.reason_phrase}{retried}: {detail}"
                                      f"{_hint(response.status_code, self.config)}", response.status_code)
                time.sleep(wait)

    def _error_detail(self, response: httpx.Response) -> str:
        raw = b""
        try:
            for chunk in response.iter_bytes():
                raw += chunk
                if len(raw) >= MAX_ERROR_BODY:
                    break
        except httpx.TransportError:
            pass
        finally:
            response.close()
        text = raw[:MAX_ERROR_BODY].decode("utf-8", errors="replace")
        try:
            text = error_message(json.loads(text)) or text
        except ValueError:
            pass
        text = self._redact(" ".join(text.split()))
        return (text[:SHOWN_BODY_CHARS] + "…") if len(text) > SHOWN_BODY_CHARS else (text or "(no message)")

    def _retry_wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None when this status is not worth retrying."""
        header = response.headers.get("retry-after")
        if response.status_code != 429 and not (response.status_code == 503 and header):
            return None
        wait = None
        if header:
            try:
                wait = float(header)  # seconds, or an HTTP date
            except ValueError:
                try:
                    wait = email.utils.parsedate_to_datetime(header).timestamp() - time.time()
                except (TypeError, ValueError, IndexError):
                    wait = None
        if wait is None or math.isnan(wait):  # no usable header: back off 1, 2, 4 … s
            wait = 2.0 ** attempt
        return min(max(wait, 0.0), self.config.max_retry_wait_s)

    def _transport_error(self, error: Exception, tokens: int | None) -> RemoteError:
        url, config = self.url, self.config
        after = "" if tokens is None else f" after {tokens} tokens"
        if isinstance(error, httpx.ConnectTimeout):
            text = (f"the server {url} did not accept a connection within {config.connect_timeout_s:g} s "
                    f"(connect_timeout_s={config.connect_timeout_s:g}); is it running and reachable?")
        elif isinstance(error, httpx.ConnectError):
            text = f"could not connect to the server {url} ({_reason(error)}); is it running, and is the URL right?"
        elif isinstance(error, httpx.TimeoutException):
            text = (f"the server {url} sent nothing for {config.timeout_s:g} s{after} (timeout_s={config.timeout_s:g}); "
                    "it may be overloaded or stopped")
        else:
            text = f"the connection to the server {url} broke off{after} ({_reason(error)})"
        return RemoteError(self._redact(text))

    def _json(self, method: str, path: str, body: dict | None) -> object:
        with self._response(method, path, body, stream=False) as response:
            try:
                raw = response.read()
            except httpx.TransportError as error:
                raise self._transport_error(error, None) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise RemoteError(f"the server {self.url} answered {path} with something that is not JSON: "
                              f"{_cut(raw.decode('utf-8', errors='replace'))}") from None

    def _stream(self, path: str, body: dict) -> Iterator[RemoteToken]:
        assembler, fault = TokenAssembler(), None
        with self._response("POST", path, body, stream=True) as response:
            try:
                yield from read_events(response, assembler)
                return
            except (httpx.TransportError, StreamFault) as error:
                fault = error
        # The connection is closed now; the token held back was whole, so it is kept before the error.
        yield from assembler.flush_partial()
        if isinstance(fault, StreamFault):
            raise RemoteError(self._redact(f"the stream from the server {self.url} broke off after "
                                           f"{assembler.yielded} tokens ({fault})"))
        raise self._transport_error(fault, assembler.yielded)


def _model_info(entry: dict) -> RemoteModelInfo:
    meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
    context = None
    for value in (entry.get("max_model_len"), meta.get("n_ctx"), meta.get("n_ctx_train"), entry.get("context_length")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            context = value
            break
    extra = {k: v for k, v in entry.items() if k not in ("id", "object", "owned_by", "created", "permission",
                                                          "permissions")}
    owned_by = entry.get("owned_by") if isinstance(entry.get("owned_by"), str) else None
    return RemoteModelInfo(entry["id"], owned_by, context, extra)


def _hint(status: int, config: RemoteConfig) -> str:
    if status in (401, 403):
        where = f"the environment variable {config.api_key_env}" if config.api_key_env else "none is configured"
        return f" (check the API key: {where}; set it with --remote-key-env)"
    if status == 404:
        return " (is the URL right, and is the model id served there?)"
    if 300 <= status < 400:
        return " (a redirect: give the URL it points to; requests are not sent on to another address)"
    return ""


def _reason(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 160 else text[:160] + "…"


def _cut(value: object, limit: int = 200) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
