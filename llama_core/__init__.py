"""LLaMA engine: model, tokenizer, checkpoint loading, sampling and streaming generation."""

from .config import PRESETS, ModelArgs, parameter_count, preset
from .errors import CheckpointError, ParameterError, TokenizerError
from .generation import Alternative, GenerationError, StepRecord, StopReason, generate_stream
from .loading import LoadedModel, detect_format, load_checkpoint
from .model import ForwardOutput, KVCache, Transformer
from .sampling import SamplingParams
from .templates import TEMPLATES, apply_template
from .tokenizer import StreamDecoder, Tokenizer

__all__ = [
    "PRESETS", "ModelArgs", "parameter_count", "preset",
    "CheckpointError", "ParameterError", "TokenizerError",
    "Alternative", "GenerationError", "StepRecord", "StopReason", "generate_stream",
    "LoadedModel", "detect_format", "load_checkpoint",
    "ForwardOutput", "KVCache", "Transformer",
    "SamplingParams",
    "TEMPLATES", "apply_template",
    "StreamDecoder", "Tokenizer",
]
