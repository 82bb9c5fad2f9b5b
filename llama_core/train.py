"""Next-token pretraining on a tokenized corpus, with the LLaMA paper's optimiser settings.

AdamW (β = 0.9, 0.95; weight decay 0.1), linear warmup then cosine decay to 10% of the
peak learning rate, gradient clipping at 1.0 (Touvron et al. 2023, Sec. 2.3). A run
checkpoints as it goes and resumes where it stopped, batch for batch: the data of step
s is drawn from a generator seeded with (seed, s), so no sampler state needs saving.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .config import ModelArgs, parameter_count
from .model import Transformer

STATE_FILE = "train_state.pt"
LOG_FILE = "log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    model: ModelArgs
    data_dir: str  # holds train.bin and val.bin (uint16 tokens), as written by llama_core.corpus
    out_dir: str
    tokens: int  # training budget D in tokens
    batch_size: int = 16  # sequences per micro-batch
    grad_accum: int = 1
    seq_len: int = 256
    lr: float = 2e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 16
    checkpoint_every: int = 50
    seed: int = 0
    bf16_autocast: bool = False  # helps only on CPUs with native bf16 matmuls (AMX, AVX512-BF16)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.seq_len

    @property
    def total_steps(self) -> int:
        return max(1, math.ceil(self.tokens / self.tokens_per_step))

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["model"] = self.model.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        return cls(**{**values, "model": ModelArgs(**values["model"])})


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warmup to the peak, then cosine decay to min_lr_ratio of it at the last step."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.total_steps - config.warmup_steps)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def load_tokens(path: Path) -> np.ndarray:
    return np.memmap(path, dtype=np.uint16, mode="r")


def batch_at(tokens: np.ndarray, step: int, config: TrainConfig, seed_offset: int = 0,
             device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The micro-batches of one step: random windows, reproducible from (seed, step) alone."""
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step + seed_offset)
    n = config.batch_size * config.grad_accum
    starts = torch.randint(0, len(tokens) - config.seq_len - 1, (n,), generator=generator).tolist()
    windows = torch.from_numpy(np.stack([tokens[s : s + config.seq_len + 1].astype(np.int64) for s in starts]))
    windows = windows.to(device)
    return windows[:, :-1], windows[:, 1:]  # inputs, targets: (N, T)


def make_optimizer(model: Transformer, config: TrainConfig) -> torch.optim.AdamW:
    # Decay matrices only: norms' gains and (as is usual) nothing 1-D are regularised.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), eps=1e-8)


def loss_on(model: Transformer, inputs: torch.Tensor, targets: torch.Tensor, bf16: bool) -> torch.Tensor:
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(inputs).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@torch.no_grad()
def evaluate(model: Transformer, val_tokens: np.ndarray, config: TrainConfig) -> float:
    """Mean loss on the same fixed validation windows every time (seeded independently of training)."""
    model.eval()
    single = dataclasses.replace(config, grad_accum=1)
    device = next(model.parameters()).device
    losses = [float(loss_on(model, *batch_at(val_tokens, i, single, 10**9, device), config.bf16_autocast))
              for i in range(config.eval_batches)]
    model.train()
    return sum(losses) / len(losses)


def _save_state(path: Path, model, optimizer, step: int, elapsed: float, config: TrainConfig) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "elapsed_s": elapsed, "config": config.to_dict()}, tmp)
    os.replace(tmp, path)  # atomic: a run killed mid-save keeps the previous checkpoint


def train(config: TrainConfig, progress: bool = True, stop_after_steps: int | None = None,
          device: str = "cpu") -> dict:
    """Train (or resume) until the token budget is spent; return the final summary.

    `stop_after_steps` ends this call early after that many steps of this call, as a kill
    would (used by tests and to split a long run into parts). `device` is not part of the
    configuration: a run started on a GPU may be resumed on a CPU and the other way round.
    """
    device = torch.device(device)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / STATE_FILE
    train_tokens = load_tokens(Path(config.data_dir) / "train.bin")
    val_tokens = load_tokens(Path(config.data_dir) / "val.bin")

    torch.manual_seed(config.seed)
    model = Transformer(config.model)
    model.to(device)
    optimizer = make_optimizer(model, config)
    step, elapsed = 0, 0.0
    if state_path.exists():
        state = torch.load(state_path, weights_only=True, map_location="cpu")
        if state["config"] != config.to_dict():
            raise ValueError(f"{state_path} was written by a different configuration; use a new out_dir")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = state["step"], state["elapsed_s"]
    _truncate_log(out_dir / LOG_FILE, step)  # steps after the checkpoint will be run (and logged) again
    model.train()
    n_params = parameter_count(config.model)
    log = open(out_dir / LOG_FILE, "a")
    bar = tqdm(total=config.total_steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True)
    steps_this_call = 0
    started = time.perf_counter() - elapsed
    while step < config.total_steps:
        lr = learning_rate(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = batch_at(train_tokens, step, config, device=device)
        loss_sum = 0.0
        for micro in range(config.grad_accum):
            rows = slice(micro * config.batch_size, (micro + 1) * config.batch_size)
            loss = loss_on(model, inputs[rows], targets[rows], config.bf16_autocast) / config.grad_accum
            loss.backward()
            loss_sum += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        steps_this_call += 1
        tokens_seen = step * config.tokens_per_step
        entry = {"step": step, "tokens": tokens_seen, "flops": 6 * n_params * tokens_seen, "lr": lr,
                 "loss": loss_sum, "elapsed_s": time.perf_counter() - started, "device": device.type}
        if step % config.eval_every == 0 or step == config.total_steps:
            entry["val_loss"] = evaluate(model, val_tokens, config)
        log.write(json.dumps(entry) + "\n")
        log.flush()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{tokens_seen / max(entry['elapsed_s'], 1e-9):.0f}")
        if step % config.checkpoint_every == 0 or step == config.total_steps:
            _save_state(state_path, model, optimizer, step, entry["elapsed_s"], config)
        if stop_after_steps is not None and steps_this_call >= stop_after_steps and step < config.total_steps:
            break
    bar.close()
    log.close()
    return {"model": model.eval().cpu(), "device": device.type, "step": step, "done": step >= config.total_steps,
            "tokens": step * config.tokens_per_step, "flops": 6 * n_params * step * config.tokens_per_step,
            "elapsed_s": time.perf_counter() - started, "n_params": n_params}


def _truncate_log(path: Path, step: int) -> None:
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))


def read_log(out_dir: str | Path) -> list[dict]:
    path = Path(out_dir) / LOG_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
