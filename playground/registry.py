"""Which models the playground offers, and the loaded ones it keeps.

The dropdown only ever offers these choices, so a client cannot make the server open an
arbitrary path or reach an arbitrary server: every source is either found by scanning the models
directory, given on the command line by whoever started the app (checkpoints, and `--remote` servers
whose models are listed once at startup, playground/remote_models.py), or a named preset with no
weights (which explains how to add them instead of loading anything).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil

from llama_core import CheckpointError, LoadedModel, detect_format, parameter_count, preset
from llama_core.backends import Backend, LocalBackend, RemoteModel
from llama_core.gguf_file import is_later_split_part
from llama_core.loading import estimate_checkpoint_bytes, format_bytes

from .zerogpu import gpu_stream, load_model

REPO = Path(__file__).resolve().parents[1]
BUNDLED_DIR = REPO / "models"
PRESET_MODELS = {"LLaMA-7B": "llama-7b", "LLaMA-13B": "llama-13b", "LLaMA-33B": "llama-33b", "LLaMA-65B": "llama-65b"}
KEEP_LOADED_BYTES = 2 * 1024**3  # small models stay loaded for instant switching; big ones are swapped
WEIGHT_SUFFIXES = (".bin", ".pth", ".pt", ".safetensors", ".gguf")


def needs_local_model(label: str, server: str, view: str = "this view") -> str:
    """What a view that needs the weights says about a model served elsewhere."""
    return (f"{view} needs the model's weights, so it needs a local model: {label} runs on the server {server}, "
            "which sends back tokens and their top-n probabilities only. Choose a local model and generate again.")


@dataclass(frozen=True)
class ModelChoice:
    label: str  # what the dropdown shows; also the value it sends back
    source: str | None  # path, Hub id or server URL; None when the weights (or the server) are absent
    kind: str  # "bundled", "local", "hub", "remote" or "preset"
    hint: str = ""  # for absent presets: how to add the weights; for a server not reached: what went wrong


def _params_label(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _describe_local(path: Path, kind: str) -> ModelChoice | None:
    if is_later_split_part(path):
        return None  # a split GGUF is offered once, by its first part
    try:
        detect_format(path)
    except CheckpointError:
        # A broken weights file is still offered, so that choosing it says what is wrong with it
        # rather than the file silently missing from the list.
        if not (path.is_file() and path.suffix in WEIGHT_SUFFIXES):
            return None
    return ModelChoice(f"{path.name} ({kind})", str(path), kind)


def _preset_dir(models_dir: Path, name: str, key: str) -> Path | None:
    for candidate in (models_dir / name, models_dir / key, models_dir / name.removeprefix("LLaMA-")):
        if candidate.is_dir() and _describe_local(candidate, "local"):
            return candidate
    return None


def _bundled_order(path: Path) -> tuple[bool, int]:
    # The compute-matched models (their card names a FLOP budget) come after the main ones, largest
    # first in each group: the 17M one saw 0.58M tokens and must not become the default model.
    same_compute = "same_compute" in json.loads((path / "model_card.json").read_text())
    return same_compute, -(path / "model.safetensors").stat().st_size


def discover(models_dir: Path | None, extra_sources: list[str], remote: list[ModelChoice] = ()) -> list[ModelChoice]:
    """Bundled models (largest first, compute-matched ones last), checkpoints in `models_dir`, `--model` sources,
    the `remote` servers' models, then presets."""
    choices: list[ModelChoice] = []
    bundled = sorted((p for p in BUNDLED_DIR.glob("*") if (p / "model_card.json").exists()), key=_bundled_order)
    choices += [c for p in bundled if (c := _describe_local(p, "bundled"))]
    seen = {Path(c.source).resolve() for c in choices}
    if models_dir is not None and models_dir.is_dir():
        for path in sorted(models_dir.iterdir()):
            if path.resolve() not in seen and (choice := _describe_local(path, "local")):
                choices.append(choice)
                seen.add(path.resolve())
    for source in extra_sources:
        path = Path(source).expanduser()
        if path.exists():
            if path.resolve() not in seen:
                choices.append(ModelChoice(f"{path.name} (local)", str(path), "local"))
        else:
            choices.append(ModelChoice(f"{source} (Hub)", source, "hub"))
    choices += remote
    for name, key in PRESET_MODELS.items():
        found = _preset_dir(models_dir, name, key) if models_dir else None
        if found is not None and found.resolve() not in seen:
            choices.append(ModelChoice(f"{name} (local)", str(found), "local"))
        elif found is None:
            size = _params_label(parameter_count(preset(key)))
            where = models_dir or BUNDLED_DIR
            choices.append(ModelChoice(
                f"{name} ({size}, weights not found)", None, "preset",
                hint=f"{name} needs its weights: put Meta's `{key.split('-')[1].upper()}` folder (params.json + "
                     f"consolidated.*.pth, tokenizer.model beside it or one level up) or a Hugging Face "
                     f"conversion at `{where / name}`, then restart.",
            ))
    return choices


class ModelRegistry:
    """The offered choices and a small cache of loaded models, shared by all sessions.

    Loading happens inside the queue's single model slot, so two loads never race; the lock
    only guards the cache dictionary against API calls that bypass nothing but arrive together.
    """

    def __init__(self, choices: list[ModelChoice], context_length: int | None = None,
                 remote_models: dict[str, RemoteModel] | None = None):
        self.choices = {c.label: c for c in choices}
        self.context_length = context_length  # app.py --context: every model's window, else each one's own
        self._remote = dict(remote_models or {})  # label -> the server's model: nothing to load, nothing to drop
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    @property
    def labels(self) -> list[str]:
        return list(self.choices)

    @property
    def local_paths(self) -> list[str]:
        """Every checkpoint path offered, for the app to block from being served as a file."""
        return [c.source for c in self.choices.values() if c.kind in ("bundled", "local")]

    @property
    def default(self) -> str:
        return next(label for label, c in self.choices.items() if c.source is not None)

    def get(self, label: str) -> ModelChoice:
        if label not in self.choices:
            raise KeyError(f"unknown model {label!r}")
        return self.choices[label]

    def is_loaded(self, label: str) -> bool:
        return label in self._loaded

    def is_remote(self, label: str) -> bool:
        return label in self._remote

    def remote(self, label: str) -> RemoteModel:
        """The server's model behind a remote entry (KeyError for any other label)."""
        if label not in self._remote:
            raise KeyError(f"{label!r} is not a remote model")
        return self._remote[label]

    def backend(self, label: str) -> Backend:
        """Where `label` runs: its RemoteModel, or the local engine on the loaded checkpoint (loading it)."""
        if label in self._remote:
            return self._remote[label]  # never touches the loaded local models
        return LocalBackend(self.load(label), stream=gpu_stream)

    def context_of(self, label: str) -> int | None:
        """The context window of a loaded local model or a remote one whose server reports it; else None."""
        if label in self._remote:
            return self._remote[label].context_length
        return self._loaded[label].args.max_seq_len if label in self._loaded else None

    def load(self, label: str) -> LoadedModel:
        """The loaded model for `label`; a failed load raises and leaves the cache as it was. A remote entry
        has no weights here: asking for them is an error that says a local model is needed."""
        choice = self.get(label)
        if choice.source is None:
            raise CheckpointError(choice.hint)
        if label in self._remote:
            raise CheckpointError(needs_local_model(label, choice.source))
        with self._lock:
            if label in self._loaded:
                return self._loaded[label]
        self._make_room(label, choice.source)
        # check_memory=False: _make_room checked, and made room
        # On a ZeroGPU Space a big checkpoint goes onto CUDA in bf16; elsewhere this is load_checkpoint.
        loaded = load_model(choice.source, check_memory=False, context_length=self.context_length)
        if loaded.tokenizer is None:
            raise CheckpointError(f"{Path(choice.source).name}: no tokenizer.model next to the weights; put the "
                                  "model's tokenizer.model beside them")
        with self._lock:
            if loaded.n_bytes > KEEP_LOADED_BYTES:  # a big model replaces the other big ones
                self._drop_big_models()
            self._loaded[label] = loaded
        return loaded

    def _make_room(self, label: str, source: str) -> None:
        """Refuse, from the headers alone, a checkpoint that cannot fit in memory (the loaded
        models stay as they are); drop the big loaded models first when only that makes it fit."""
        if not Path(source).exists():
            return  # a Hub id: its size is known only once downloaded
        needed = estimate_checkpoint_bytes(source)
        free = psutil.virtual_memory().available
        with self._lock:
            reclaimable = sum(m.n_bytes for m in self._loaded.values() if m.n_bytes > KEEP_LOADED_BYTES)
        if needed > KEEP_LOADED_BYTES and needed > free and needed <= free + reclaimable:
            with self._lock:
                self._drop_big_models()  # it would replace them anyway; both never fit at once
            return
        if needed > free:
            raise CheckpointError(f"{label} needs ~{format_bytes(needed)} of memory for its weights, "
                                  f"{format_bytes(free)} is free; the loaded models stay loaded")

    def _drop_big_models(self) -> None:
        for other in [k for k, m in self._loaded.items() if m.n_bytes > KEEP_LOADED_BYTES]:
            del self._loaded[other]
