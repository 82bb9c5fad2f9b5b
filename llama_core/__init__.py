"""LLaMA engine: model, tokenizer, checkpoint loading, sampling and streaming generation."""

from .backends import RemoteConfig, RemoteError, RemoteServer
from .chat import BUILTIN_CHAT_TEMPLATES, chat_prompt, encode_chat, render_chat
from .config import PRESETS, ModelArgs, parameter_count, preset
from .errors import ChatTemplateError, CheckpointError, ParameterError, TokenizerError
from .generation import Alternative, GenerationError, StepRecord, StopReason, generate_stream
from .loading import LoadedModel, detect_format, load_checkpoint
from .model import ForwardOutput, KVCache, Transformer
from .sampling import SamplingParams
from .templates import TEMPLATES, apply_template
from .tokenizer import StreamDecoder, Tokenizer

__all__ = [
    "RemoteConfig", "RemoteError", "RemoteServer",
    "BUILTIN_CHAT_TEMPLATES", "chat_prompt", "encode_chat", "render_chat",
    "PRESETS", "ModelArgs", "parameter_count", "preset",
    "ChatTemplateError", "CheckpointError", "ParameterError", "TokenizerError",
    "Alternative", "GenerationError", "StepRecord", "StopReason", "generate_stream",
    "LoadedModel", "detect_format", "load_checkpoint",
    "ForwardOutput", "KVCache", "Transformer",
    "SamplingParams",
    "TEMPLATES", "apply_template",
    "StreamDecoder", "Tokenizer",
]
