"""Hugging Face Hub repo ids, resolved to a local snapshot through huggingface_hub's cache.

`snapshot_download` honours HF_HUB_OFFLINE and the cache location (HF_HOME / HF_HUB_CACHE)
itself; huggingface_hub reads both once, when it is imported.

`org/name:TAG` (as llama.cpp's `-hf` takes it) picks a GGUF file from a repo of them: the one whose name carries the
quantization tag (`Q4_K_M`, `q8_0`, case-insensitive, as a whole word of the name), every part when it is split.
Only the matching files are fetched.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..errors import CheckpointError
from ..gguf_file import is_later_split_part

# "org/name": one slash, names that start with a letter or digit (so "./x" or "../x" never match); an optional
# ":TAG" selects a GGUF quantization.
REPO_ID = re.compile(r"\w[\w.-]*/\w[\w.-]*(?::\w[\w.-]*)?")

# Only what the loader reads, named one by one (never a pattern that could match code, such as *.py):
# config and generation defaults, weights (+ shard index), every tokenizer file, the model card.
COMMON_PATTERNS = [
    "config.json", "generation_config.json", "model_card.json",
    "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
]
SAFETENSORS_PATTERNS = ["model*.safetensors", "model.safetensors.index.json"]
PICKLE_PATTERNS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]


def is_hub_id(source: str | Path) -> bool:
    """True for an `org/name` string that is not an existing local path; a local path always wins."""
    if isinstance(source, Path) or Path(source).expanduser().exists():
        return False
    return REPO_ID.fullmatch(source) is not None


def download_snapshot(repo_id: str) -> Path:
    """The local snapshot folder of `repo_id`, fetching only the files the loader reads; for `org/name:TAG`, the
    GGUF file the tag selects (its first part when split).

    Pickled `.bin` weights are fetched only when the repo has no safetensors.
    """
    if ":" in repo_id:
        return _download_gguf(*repo_id.split(":", 1))
    with _hub_errors(repo_id):
        folder = Path(snapshot_download(repo_id, allow_patterns=COMMON_PATTERNS + SAFETENSORS_PATTERNS))
        if not any(folder.glob("model*.safetensors")):
            folder = Path(snapshot_download(repo_id, allow_patterns=COMMON_PATTERNS + PICKLE_PATTERNS))
    return folder


def _any_case(text: str) -> str:
    """A glob matching `text` in any letter case (the Hub's pattern filter is case-sensitive)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in text)


def _download_gguf(repo_id: str, tag: str) -> Path:
    """The GGUF file of `repo_id` whose name carries `tag` (first part of a split one), fetching only its files."""
    source = f"{repo_id}:{tag}"
    carries = re.compile(rf"(?<![A-Za-z0-9]){re.escape(tag)}(?![A-Za-z0-9_])", re.IGNORECASE)
    with _hub_errors(source):
        # fnmatch's '*' crosses '/', so files in subfolders (a split model's own folder) match too.
        folder = Path(snapshot_download(repo_id, allow_patterns=[f"*{_any_case(tag)}*.gguf"]))
    matching = sorted(p for p in folder.rglob("*.gguf") if carries.search(p.name) and not is_later_split_part(p))
    if len(matching) == 1:
        return matching[0]
    if matching:
        names = ", ".join(str(p.relative_to(folder)) for p in matching)
        raise CheckpointError(f"'{source}': several GGUF files carry '{tag}' ({names}); pass one of them as a path")
    available = _repo_gguf_files(repo_id, folder)
    raise CheckpointError(
        f"'{source}': no GGUF file of {repo_id} carries the tag '{tag}' in its name (case-insensitive); "
        + (f"its GGUF files{' in the cache' if constants.HF_HUB_OFFLINE else ''}: {', '.join(available)}"
           if available else "no GGUF files found in it"))


def _repo_gguf_files(repo_id: str, folder: Path) -> list[str]:
    """The repo's .gguf files, from the Hub when it can be asked, else from the cached snapshot."""
    try:
        names = HfApi().list_repo_files(repo_id) if not constants.HF_HUB_OFFLINE else []
    except (HfHubHTTPError, OSError, ValueError):
        names = []
    names = names or [str(p.relative_to(folder)) for p in folder.rglob("*.gguf")]
    return sorted(n for n in names if n.lower().endswith(".gguf"))


@contextmanager
def _hub_errors(repo_id: str) -> Iterator[None]:
    """huggingface_hub's exceptions as CheckpointErrors that say what to do about them."""
    try:
        yield
    except LocalEntryNotFoundError as e:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"the Hub could not be reached ({e})"
        raise CheckpointError(
            f"'{repo_id}' is not (completely) in the Hugging Face cache at {constants.HF_HUB_CACHE} and {why}. "
            f"Download it once while online (`hf download {repo_id.split(':')[0]}`), unset HF_HUB_OFFLINE, point "
            "HF_HOME at the cache that has it, or pass a local directory."
        ) from None
    except GatedRepoError:
        raise CheckpointError(
            f"'{repo_id}' is gated: accept its license on huggingface.co and log in with `hf auth login`"
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"'{repo_id}' is neither a local path nor a Hugging Face repo you can access "
            "(check the spelling; private repos need `hf auth login`)"
        ) from None
    except RevisionNotFoundError as e:
        raise CheckpointError(f"'{repo_id}': revision not found on the Hub ({e})") from None
    except (HfHubHTTPError, HFValidationError) as e:
        raise CheckpointError(f"'{repo_id}': could not fetch it from the Hugging Face Hub ({e})") from None
