"""How to reach one remote server: its URL, where its API key lives, and how long to wait for it.

Only the operator sets these (command line, environment); nothing a page visitor sends can name a server.
The key itself is never stored here — only the name of the environment variable that holds it — so printing,
logging or reporting a config cannot leak it.
"""

from __future__ import annotations

import math
import numbers
import re
import urllib.parse
from dataclasses import dataclass

from ..errors import ParameterError

MAX_TIMEOUT_S = 3600.0
MAX_RETRIES = 10
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _seconds(name: str, value: object, lo_open: bool = True) -> float:
    allowed = f"a number of seconds in {'(0' if lo_open else '[0'}, {MAX_TIMEOUT_S:g}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(name, allowed, value)
    value = float(value)
    if not math.isfinite(value) or value > MAX_TIMEOUT_S or value < 0 or (lo_open and value == 0):
        raise ParameterError(name, allowed, value)
    return value


def normalized_url(url: object) -> str:
    """The server's base URL without a trailing '/' or '/v1'; ParameterError naming `url` when it is not one."""
    allowed = "an http(s)://host[:port][/path] URL without user name, password, query or fragment"
    if not isinstance(url, str) or not url.strip() or len(url) > 2000:
        raise ParameterError("url", allowed, url)
    url = url.strip()
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError:
        raise ParameterError("url", allowed, url) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ParameterError("url", allowed, url)
    if parts.username is not None or parts.password is not None:
        # Said without echoing the URL: the part before '@' may be a secret.
        raise ParameterError("url", allowed + " (pass a key with api_key_env / --remote-key-env)",
                             f"{parts.scheme}://…@{parts.hostname}{f':{port}' if port else ''}")
    if parts.query or parts.fragment or any(c.isspace() for c in url):
        raise ParameterError("url", allowed, url)
    path = parts.path.rstrip("/")
    path = path.removesuffix("/v1")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


@dataclass(frozen=True)
class RemoteConfig:
    """A server to connect to; validated on construction (a ParameterError names the field).

    Args:
        url: the server, with or without its `/v1` (http://127.0.0.1:8000 and http://127.0.0.1:8000/v1 are one).
        api_key_env: the environment variable holding the API key, read at each request (None: no key).
        timeout_s: the longest wait for the server's next bytes: its first answer, then between stream events.
        connect_timeout_s: the longest wait for a connection.
        max_retries: how often a 429 (rate limit) is retried, after the wait its Retry-After asks for.
        max_retry_wait_s: the longest single wait before a retry, whatever Retry-After says.
    """

    url: str
    api_key_env: str | None = None
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    max_retries: int = 3
    max_retry_wait_s: float = 30.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", normalized_url(self.url))
        if self.api_key_env is not None and (not isinstance(self.api_key_env, str)
                                             or not ENV_NAME.fullmatch(self.api_key_env)):
            raise ParameterError("api_key_env", "the name of an environment variable (letters, digits, '_'), "
                                 "or None for no key", self.api_key_env)
        object.__setattr__(self, "timeout_s", _seconds("timeout_s", self.timeout_s))
        object.__setattr__(self, "connect_timeout_s", _seconds("connect_timeout_s", self.connect_timeout_s))
        object.__setattr__(self, "max_retry_wait_s", _seconds("max_retry_wait_s", self.max_retry_wait_s,
                                                              lo_open=False))
        retries = self.max_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
            raise ParameterError("max_retries", f"an integer in [0, {MAX_RETRIES}]", retries)

    @property
    def api_url(self) -> str:
        """Where the OpenAI-compatible routes live: the base URL + /v1."""
        return self.url + "/v1"

    @property
    def host(self) -> str:
        """host:port, for labels such as "llama-7b (remote: gpu-box:8000)"."""
        return urllib.parse.urlsplit(self.url).netloc
