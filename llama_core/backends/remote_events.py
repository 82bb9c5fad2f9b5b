"""What an OpenAI-compatible server's answers say about each token, whichever engine wrote them: the events of a
server-sent-event stream (`read_events`: `data:` lines, a blank line ending each event, `:` keep-alive comments,
`data: [DONE]` at the end) and the log-probabilities inside them.

One parser for every shape we have read in the engines' sources:

- completions `logprobs` as parallel lists `{tokens, token_logprobs, top_logprobs: [{text: logprob}], text_offset}`
  (llama-cpp-python, vLLM, OpenAI's legacy API; vLLM's `top_logprobs` holds the chosen token too, llama-cpp-python
  adds it when it is not among the top ones);
- chat `logprobs.content[]` entries `{token, logprob, top_logprobs: [{token, logprob}]}` (vLLM, TGI, Ollama,
  llama-cpp-python), which llama.cpp's own server also uses for `/v1/completions`, with `id` and `bytes` added;
- TGI's `/v1/completions` `logprobs`: a bare list of floats (no alternatives);
- no `logprobs` at all (Ollama before it had them): the text of each event as one token of unknown probability.

Probabilities are the server's raw (pre-sampling) log-probabilities. vLLM writes -9999 and llama.cpp the lowest
float for a log of 0; both become -inf here.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

NEG_INF_BELOW = -9999.0  # vLLM's stand-in for -inf (JSON has none)


class StreamFault(Exception):
    """An event that cannot be read, or an error the server reported inside the stream (the message says which)."""


@dataclass(frozen=True)
class RemoteToken:
    """One generated (or, for prompt log-probabilities, given) token as the server reported it."""

    text: str  # the token's own text, as the server spells it
    logprob: float | None  # None: the server reported no probability for it
    top: tuple[tuple[str, float], ...]  # the server's most likely tokens at this step, most likely first
    finish_reason: str | None  # set on the last token of a stream: "stop", "length", ...
    token_id: int | None = None  # the server's own id, where it sends one (llama.cpp)
    fingerprint: str | None = None  # the server's system_fingerprint (build / version), where it sends one
    # What this token added to the reply, where that is not `text`: the server cut it at a stop string.
    emitted: str | None = None

    @property
    def output(self) -> str:
        return self.text if self.emitted is None else self.emitted


def _logprob(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    if math.isnan(value):
        return None
    return -math.inf if value <= NEG_INF_BELOW else min(value, 0.0)  # a rounding +1e-7 is still probability 1


def _top_list(entries: object) -> tuple[tuple[str, float], ...]:
    pairs = []
    if isinstance(entries, dict):  # completions: {text: logprob}
        entries = [{"token": text, "logprob": lp} for text, lp in entries.items()]
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict) and isinstance(entry.get("token"), str):
            logprob = _logprob(entry.get("logprob"))
            if logprob is not None:
                pairs.append((entry["token"], logprob))
    return tuple(sorted(pairs, key=lambda pair: -pair[1]))


def logprob_entries(logprobs: object, text: str) -> list[tuple[str, float | None, tuple, int | None]]:
    """(token text, logprob, top, server id) for each token an event's `logprobs` describes."""
    if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
        found = []
        for entry in logprobs["content"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
                raise StreamFault(f"a logprobs.content entry without a token text: {_cut(entry)}")
            server_id = entry.get("id") if isinstance(entry.get("id"), int) else None
            found.append((entry["token"], _logprob(entry.get("logprob")), _top_list(entry.get("top_logprobs")),
                          server_id))
        return found
    if isinstance(logprobs, dict) and isinstance(logprobs.get("tokens"), list):
        tokens = logprobs["tokens"]
        values = logprobs.get("token_logprobs") or [None] * len(tokens)
        tops = logprobs.get("top_logprobs") or [None] * len(tokens)
        if not all(isinstance(t, str) for t in tokens) or len(values) != len(tokens) or len(tops) != len(tokens):
            raise StreamFault(f"logprobs lists of different lengths or non-text tokens: {_cut(logprobs)}")
        return [(t, _logprob(v), _top_list(top), None) for t, v, top in zip(tokens, values, tops)]
    if isinstance(logprobs, list) and len(logprobs) == 1 and text:  # TGI completions: one float per token
        return [(text, _logprob(logprobs[0]), (), None)]
    return [(text, None, (), None)] if text else []


def _emitted(pieces: list[str], text: str) -> list[str | None]:
    """What each token added to the event's text: its own text, unless the server cut the reply short."""
    if "".join(pieces) == text:
        return [None] * len(pieces)
    out, rest = [], text
    for i, piece in enumerate(pieces):
        take = rest if i == len(pieces) - 1 else rest[: len(os.path.commonprefix([piece, rest]))]
        out.append(take if take != piece else None)
        rest = rest[len(take):]
    return out


def _cut(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def error_message(payload: object) -> str | None:
    """The message of an error object as vLLM, TGI, FastAPI (llama-cpp-python) and llama.cpp write it."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    if isinstance(error, str):
        return error
    if payload.get("object") == "error":
        return str(payload.get("message") or payload)
    detail = payload.get("detail")
    if detail is not None:
        return str(detail)
    return None


class TokenAssembler:
    """Turns a stream's events into RemoteTokens.

    It holds the newest token back until the next event: a finish reason arrives in an event of its own on
    most servers (llama-cpp-python never reports the end-of-sequence token at all), and it belongs on the last
    token. A stream that finishes with no token at all gives one empty token carrying the finish reason.
    """

    def __init__(self) -> None:
        self.pending: RemoteToken | None = None
        self.finish_reason: str | None = None
        self.fingerprint: str | None = None
        self.yielded = 0
        self.usage: dict | None = None

    def feed(self, event: object) -> list[RemoteToken]:
        """The tokens that are ready after this event (the held-back one, when a newer one came)."""
        message = error_message(event)
        if message is not None:
            raise StreamFault(f"the server reported an error: {message[:300]}")
        if not isinstance(event, dict):
            raise StreamFault(f"an event that is not a JSON object: {_cut(event)}")
        if isinstance(event.get("system_fingerprint"), str) and event["system_fingerprint"]:
            self.fingerprint = event["system_fingerprint"]
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        choices = event.get("choices")
        if not isinstance(choices, list):
            raise StreamFault(f"an event without a 'choices' list: {_cut(event)}")
        choice = next((c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0), None)
        if choice is None:
            return []  # a usage-only event, or another choice's
        text = choice.get("text")
        if not isinstance(text, str):
            delta = choice.get("delta") or choice.get("message") or {}
            text = delta.get("content") if isinstance(delta, dict) else None
            text = text if isinstance(text, str) else ""
        entries = logprob_entries(choice.get("logprobs"), text)
        ready = []
        for (piece, logprob, top, server_id), emitted in zip(entries, _emitted([e[0] for e in entries], text)):
            if self.pending is not None:
                ready.append(self.pending)
            self.pending = RemoteToken(piece, logprob, top, None, server_id, self.fingerprint, emitted)
        if isinstance(choice.get("finish_reason"), str) and choice["finish_reason"]:  # TGI sends "" until the end
            self.finish_reason = choice["finish_reason"]
        self.yielded += len(ready)
        return ready

    def finish(self) -> list[RemoteToken]:
        """The last token, with the finish reason (None if the stream ended without one)."""
        last = self.pending or (RemoteToken("", None, (), None) if self.finish_reason else None)
        self.pending = None
        if last is None:
            return []
        self.yielded += 1
        return [RemoteToken(last.text, last.logprob, last.top, self.finish_reason, last.token_id,
                            self.fingerprint or last.fingerprint, last.emitted)]

    def flush_partial(self) -> list[RemoteToken]:
        """On a broken stream: the held-back token, which was whole when it arrived, with no finish reason."""
        last, self.pending = self.pending, None
        if last is None:
            return []
        self.yielded += 1
        return [last]


def read_events(response, assembler: TokenAssembler) -> Iterator[RemoteToken]:
    """The tokens of an httpx response holding a server-sent-event stream (or one JSON body, from a server that
    answers a stream request without streaming, as vLLM does for beam search)."""
    if "json" in response.headers.get("content-type", "") and "event-stream" not in response.headers["content-type"]:
        yield from assembler.feed(_parse(response.read().decode("utf-8", errors="replace")))
        yield from assembler.finish()
        return
    data: list[str] = []
    done = False
    for line in response.iter_lines():
        if line.startswith(":"):  # a comment: the keep-alive pings of sse-starlette and llama.cpp
            continue
        if line:
            name, _, value = line.partition(":")
            if name == "data":
                data.append(value.removeprefix(" "))
            continue
        if data:  # a blank line ends an event
            payload, data = "\n".join(data), []
            if payload.strip() == "[DONE]":
                done = True
                break
            yield from assembler.feed(_parse(payload))
    if data and not done:  # the last event of a stream that ended without its blank line
        payload = "\n".join(data)
        done = payload.strip() == "[DONE]"
        if not done:
            yield from assembler.feed(_parse(payload))
    if not done and assembler.finish_reason is None:
        raise StreamFault("the stream ended without a finish reason or [DONE]: the server stopped or the "
                          "connection was cut")
    yield from assembler.finish()


def _parse(payload: str) -> object:
    try:
        return json.loads(payload)
    except ValueError:
        raise StreamFault(f"malformed JSON in an event: {_cut(payload, 120)}") from None
