"""The error types the engine raises for things a user can fix."""

from __future__ import annotations


class ParameterError(ValueError):
    """A generation parameter is out of range or of the wrong type.

    The message names the parameter, the allowed range and the value given, e.g.
    "temperature must be in [0, 2] (0 = greedy), got -0.5".
    """

    def __init__(self, name: str, allowed: str, got: object):
        self.name, self.allowed, self.got = name, allowed, got
        super().__init__(f"{name} must be {allowed}, got {_shown(got)}")


def _shown(value: object, limit: int = 80) -> str:
    # A hostile request can send a megabyte where a number belongs; echo only its start.
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


class CheckpointError(RuntimeError):
    """A checkpoint could not be loaded; the message names the file and what is wrong with it."""


class TokenizerError(RuntimeError):
    """A tokenizer file is missing, corrupt or does not match the model."""


class ChatTemplateError(ValueError):
    """A chat template failed to compile or render, or tried to leave its sandbox.

    The message starts with where the template came from (the checkpoint's tokenizer_config.json,
    a GGUF file, or "built-in template 'alpaca'"), so a broken download names its own file.
    """

    def __init__(self, source: str, problem: str):
        self.source, self.problem = source, problem
        super().__init__(f"{source}: {problem}")
