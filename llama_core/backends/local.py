"""The local engine as a Backend: the weights are here, so every view is available."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from ..chat import encode_chat
from ..generation import DEFAULT_ATTENTION_BUDGET, MAX_TOP_N, StepRecord, generate_stream
from ..loading import LoadedModel
from ..sampling import SamplingParams
from ..insight.scoring import TextScore, score_text
from ..tokenizer import Tokenizer
from .base import Capabilities

LOCAL_CAPABILITIES = Capabilities(attention=True, logit_lens=True, prompt_logprobs=True, full_distribution=True,
                                  top_n_max=MAX_TOP_N)


class LocalBackend:
    """A loaded checkpoint behind the Backend interface: generation and scoring as the engine does them."""

    capabilities = LOCAL_CAPABILITIES

    def __init__(self, loaded: LoadedModel, label: str | None = None,
                 stream: Callable[..., Iterator[StepRecord]] = generate_stream):
        if not isinstance(loaded, LoadedModel):
            raise TypeError(f"LocalBackend takes a LoadedModel, got {type(loaded).__name__}")
        self.loaded = loaded
        # generate_stream's signature; the app passes one that runs it on a Space's GPU (playground/zerogpu.py).
        self._stream = stream
        self.label = label or (loaded.model_card or {}).get("name") or str(loaded.source)
        self.origin = str(loaded.path)
        self._fingerprint: str | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalBackend({self.label!r} from {self.origin})"

    @property
    def tokenizer(self) -> Tokenizer:
        return self.loaded.tokenizer

    def generate(self, prompt: str | list[int], params: SamplingParams, *, top_n: int = 10,
                 capture_attention: bool = False, attention_budget: int = DEFAULT_ATTENTION_BUDGET,
                 messages: list[dict] | None = None) -> Iterator[StepRecord]:
        """`generate_stream` on this model; a conversation is encoded with the checkpoint's own chat template."""
        if messages is not None:
            prompt = encode_chat(self.loaded.tokenizer, messages)
        return self._stream(self.loaded.model, self.loaded.tokenizer, prompt, params, top_n=top_n,
                               capture_attention=capture_attention, attention_budget=attention_budget,
                               eos_ids=self.loaded.eos_ids)

    def score(self, text: str) -> TextScore:
        return score_text(self.loaded.model, self.loaded.tokenizer, text)

    def describe(self) -> dict:
        """The model's identity: name, source, format, size and a fingerprint of its weights (hashed once)."""
        from ..insight.run_report import weights_fingerprint  # the report's own hash; imported late, it pulls in the page

        with self._lock:  # two reports at once hash the weights once
            if self._fingerprint is None:
                self._fingerprint = weights_fingerprint(self.loaded.model)
        loaded = self.loaded
        return {"kind": "local", "model": self.label, "source": str(loaded.source), "format": loaded.format,
                "parameters": loaded.n_params, "dtype": str(loaded.dtype).removeprefix("torch."),
                "weights": self._fingerprint}
