"""Hugging Face Hub repo ids, resolved to a local snapshot through huggingface_hub's cache.

`snapshot_download` honours HF_HUB_OFFLINE and the cache location (HF_HOME / HF_HUB_CACHE)
itself; huggingface_hub reads both once, when it is imported.
"""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..errors import CheckpointError

# "org/name": one slash, names that start with a letter or digit (so "./x" or "../x" never match).
REPO_ID = re.compile(r"\w[\w.-]*/\w[\w.-]*")

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
    """The local snapshot folder of `repo_id`, fetching only the files the loader reads.

    Pickled `.bin` weights are fetched only when the repo has no safetensors.
    """
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=COMMON_PATTERNS + SAFETENSORS_PATTERNS))
        if not any(folder.glob("model*.safetensors")):
            folder = Path(snapshot_download(repo_id, allow_patterns=COMMON_PATTERNS + PICKLE_PATTERNS))
    except LocalEntryNotFoundError as e:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"the Hub could not be reached ({e})"
        raise CheckpointError(
            f"'{repo_id}' is not (completely) in the Hugging Face cache at {constants.HF_HUB_CACHE} and {why}. "
            f"Download it once while online (`hf download {repo_id}`), unset HF_HUB_OFFLINE, point HF_HOME "
            "at the cache that has it, or pass a local directory."
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
    return folder
