"""The generation controls: one table gives each slider its range, and every field a request
sends is checked here before anything is tokenized or computed.

The generate events run with `preprocess=False`, so a value sent to the API arrives exactly as
sent (NaN, a string, a list, a megabyte of text). Gradio's own slider check lets NaN through and
its message names neither the parameter nor what would be accepted; every message here names
the parameter, the allowed range and the value received.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llama_core import TEMPLATES, ParameterError, SamplingParams
from llama_core.chat import BUILTIN_CHAT_TEMPLATES, MODEL_TEMPLATE, check_messages
from llama_core.sampling import MAX_SEED

PAGE_TOP_N, API_TOP_N = 10, 5  # alternatives recorded per token: on the page, through the API

MAX_PROMPT_CHARS = 20_000  # the page's cap, checked before tokenizing; the engine's own (200k) guards the Python API
MAX_SYSTEM_CHARS = 2_000
MAX_CONVERSATION_CHARS = 100_000  # a chat's whole history; its tokens must still fit the model's context
MAX_MESSAGES = 500
MAX_TOKENS_UNKNOWN_CONTEXT = 2**31 - 1  # until a model is loaded its context is unknown; checked again after loading


@dataclass(frozen=True)
class Control:
    """A sampling slider: its range is also what the API accepts."""

    name: str  # the SamplingParams field
    label: str
    minimum: float
    maximum: float
    step: float
    default: float
    integer: bool = False
    note: str = ""  # what a special value means, e.g. "0 = greedy"

    def allowed(self, maximum: float | None = None) -> str:
        kind = "an integer" if self.integer else "a finite number"
        note = f" ({self.note})" if self.note else ""
        return f"{kind} in [{self.minimum:g}, {self.maximum if maximum is None else maximum:g}]{note}"

    def check(self, value: object, maximum: float | None = None) -> float | int:
        """The value as a float (an int for integer controls), or a ParameterError."""
        top = self.maximum if maximum is None else maximum
        if not (_is_finite_number(value) and self.minimum <= value <= top
                and (not self.integer or float(value).is_integer())):
            raise ParameterError(self.name, self.allowed(maximum), value)
        return int(value) if self.integer else float(value)


SLIDERS = {c.name: c for c in (
    Control("temperature", "Temperature (0 = greedy)", 0, 2, 0.01, 0.8, note="0 = greedy"),
    Control("top_k", "Top-k (0 = off)", 0, 200, 1, 0, integer=True, note="0 = off"),
    Control("top_p", "Top-p (1 = off)", 0.01, 1, 0.01, 1.0, note="1 = off"),
    Control("min_p", "Min-p (0 = off)", 0, 1, 0.01, 0.0, note="0 = off"),
    Control("repetition_penalty", "Repetition penalty (1 = off)", 0.5, 2, 0.01, 1.0, note="1 = off"),
    Control("presence_penalty", "Presence penalty", -2, 2, 0.05, 0.0, note="0 = off"),
    Control("frequency_penalty", "Frequency penalty", -2, 2, 0.05, 0.0, note="0 = off"),
    # The maximum follows the loaded model's context window (context - 1).
    Control("max_new_tokens", "Max new tokens", 1, 512, 1, 96, integer=True),
)}  # fmt: skip


def _is_finite_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def check_sampling(name: str, value: object, context: int | None = None) -> float | int:
    """One slider's value: within the slider's range and within the engine's own limits."""
    if name == "max_new_tokens":
        clean = SLIDERS[name].check(value, context - 1 if context else MAX_TOKENS_UNKNOWN_CONTEXT)
    else:
        clean = SLIDERS[name].check(value)
    SamplingParams(**{name: clean})  # e.g. a temperature in (0, 0.01), which would overflow exp(logit / T)
    return clean


def check_prompt(prompt: object) -> str:
    if not isinstance(prompt, str):
        raise ParameterError("prompt", "a text", type(prompt).__name__)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ParameterError("prompt", f"at most {MAX_PROMPT_CHARS} characters", f"{len(prompt)} characters")
    if not prompt.strip():
        raise ParameterError("prompt", "a non-empty text", prompt)
    return prompt


def check_system(system: object) -> str:
    if system is None:
        return ""
    if not isinstance(system, str) or len(system) > MAX_SYSTEM_CHARS:
        raise ParameterError("system", f"a text of at most {MAX_SYSTEM_CHARS} characters",
                             f"{len(system)} characters" if isinstance(system, str) else system)
    return system


def check_template(name: object) -> str:
    if not isinstance(name, str) or name not in TEMPLATES:
        raise ParameterError("template", f"one of {', '.join(TEMPLATES)}", name)
    return name


def check_chat_template(name: object) -> str:
    """"model" (the checkpoint's own template; whether it has one is checked once it is loaded), a
    built-in, or "" (or None) for the model's own when it has one and "plain" when it has none."""
    if name is None:
        return ""
    allowed = ["", MODEL_TEMPLATE, *BUILTIN_CHAT_TEMPLATES]
    if not isinstance(name, str) or name not in allowed:
        raise ParameterError("chat_template", "one of " + ", ".join(map(repr, allowed)), name)
    return name


def check_conversation(messages: object) -> list[dict[str, str]]:
    return check_messages(messages, max_chars=MAX_CONVERSATION_CHARS, max_messages=MAX_MESSAGES)


def check_seed(seed: object) -> int | None:
    """-1 (or empty) means a random seed, drawn and reported by the run; None is returned for it."""
    if seed is None or (_is_finite_number(seed) and seed == -1):
        return None
    if not (_is_finite_number(seed) and float(seed).is_integer() and 0 <= seed <= MAX_SEED):
        raise ParameterError("seed", "-1 (random) or an integer in [0, 2^63 - 1]", seed)
    return int(seed)


def parse_stop(text: str) -> list[str]:
    """One stop sequence per line; `\\n` and `\\t` typed as escapes mean a newline and a tab."""
    lines = [line for line in text.splitlines() if line != ""]
    return [line.replace("\\n", "\n").replace("\\t", "\t") for line in lines]


def check_stop(text: object) -> tuple[str, ...]:
    if text is None:
        return ()
    if not isinstance(text, str):
        raise ParameterError("stop", "a text with one stop sequence per line", text)
    return SamplingParams(stop=tuple(parse_stop(text))).stop


def check_flag(name: str, value: object) -> bool:
    if value is not None and not isinstance(value, bool):
        raise ParameterError(name, "true or false", value)
    return bool(value)


def check_context(n_prompt: int, max_new_tokens: int, context: int) -> None:
    """The prompt and the tokens asked for must fit the context window; names the field to change."""
    if n_prompt >= context:
        raise ParameterError("prompt", f"at most {context - 1} tokens for this model (context {context})",
                             f"{n_prompt} tokens")
    if n_prompt + max_new_tokens > context:
        raise ParameterError(
            "max_new_tokens", f"at most {context - n_prompt} here: prompt tokens ({n_prompt}) + max_new_tokens "
            f"must be ≤ the context length ({context})", max_new_tokens)


FIELD_CHECKS = {
    "prompt": check_prompt, "system": check_system, "template": check_template, "seed": check_seed,
    "messages": check_conversation, "chat_template": check_chat_template,
    "stop": check_stop, "capture_attention": lambda value: check_flag("capture_attention", value),
}  # fmt: skip


def check_field(name: str, value: object, context: int | None = None) -> object:
    """The clean value of one request field (the model's `context` bounds max_new_tokens when known)."""
    return check_sampling(name, value, context) if name in SLIDERS else FIELD_CHECKS[name](value)
