"""Where a step runs: the local engine, or a remote OpenAI-compatible server (vLLM, TGI, llama.cpp, Ollama)."""

from .base import Backend, Capabilities
from .local import LocalBackend
from .piece_vocabulary import PieceVocabulary
from .remote_client import RemoteError, RemoteModelInfo, RemoteServer
from .remote_config import RemoteConfig
from .remote_events import RemoteToken
from .remote_model import RemoteModel, remote_models
from .remote_steps import remote_step_records

__all__ = [
    "Backend", "Capabilities", "LocalBackend", "PieceVocabulary",
    "RemoteConfig", "RemoteError", "RemoteModel", "RemoteModelInfo", "RemoteServer", "RemoteToken",
    "remote_models", "remote_step_records",
]
