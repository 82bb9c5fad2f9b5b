"""The LLaMA decoder in plain PyTorch, with Meta's canonical weight names.

Shape letters used throughout: B batch, T new positions in this call, S positions of
keys (cached + new), H query heads, K key/value heads, D head dim, C model dim, V vocab.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .config import ModelArgs
from .rope import rotations


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)  # one fused kernel instead of six
        # Normalise in fp32 and cast back: bf16 has too few mantissa bits for the mean of squares.
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class Linear(nn.Linear):
    """nn.Linear that takes any float input and multiplies in its weight's dtype: 16-bit weights under an
    fp32 residual stream (a no-op when the dtypes agree, and under autocast, which casts by itself)."""

    def forward(self, x: Tensor) -> Tensor:
        return project(x, self.weight)


def project(x: Tensor, weight: Tensor) -> Tensor:
    """x @ weightᵀ in the weight's dtype. The result stays in it: a 16-bit matrix product rounds its output to
    16 bits anyway, so the attention and FFN between the norms run in the weights' type, and only the residual
    stream, which sums the blocks' outputs (type promotion makes `h + out` fp32), and the norms stay fp32."""
    if x.dtype == weight.dtype or torch.is_autocast_enabled(x.device.type):
        return F.linear(x, weight)
    return F.linear(x.to(weight.dtype), weight)


def apply_rope(x: Tensor, freqs: Tensor) -> Tensor:
    """Rotate consecutive pairs (x0, x1), (x2, x3), ... of the head dim — Meta's interleaved layout."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # (B, T, H, D/2)
    rotated = torch.view_as_real(pairs * freqs.to(x.device)[:, None, :]).flatten(3)  # (B, T, H, D)
    return rotated.type_as(x)


class KVCache:
    """Keys and values of one generation, preallocated to `max_len` positions.

    The model is shared between users; each generation owns one of these, so concurrent
    requests never write into the same tensors.
    """

    def __init__(self, args: ModelArgs, max_len: int, batch_size: int = 1, dtype=torch.float32, device="cpu"):
        shape = (batch_size, args.kv_heads, max_len, args.head_dim)
        devices = device if isinstance(device, (list, tuple)) else [device] * args.n_layers
        self.k = [torch.zeros(shape, dtype=dtype, device=d) for d in devices]
        self.v = [torch.zeros(shape, dtype=dtype, device=d) for d in devices]
        self.max_len = max_len
        self.length = 0  # positions already stored; advanced by the model after each forward

    def store(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write this call's keys/values at the current position; return everything up to them."""
        end = self.length + k.shape[2]
        self.k[layer][:, :, self.length : end] = k
        self.v[layer][:, :, self.length : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def truncate(self, length: int) -> None:
        """Forget positions from `length` on (used to branch a generation from an earlier token)."""
        self.length = min(self.length, length)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, **options) -> Tensor:
    """SDPA, falling back to its math kernel where PyTorch's fused CPU kernel cannot run.

    The fused CPU kernel chooses its 16-bit (VNNI-packed) path from what the CPU supports, but runs
    the kernels `ATEN_CPU_CAPABILITY` selects: forced to AVX2 on an AVX-512 machine, bf16 sequences
    fail with "pack_vnni2 is only supported when avx512 is supported" (PyTorch 2.13). The math kernel
    computes the same attention.
    """
    try:
        return F.scaled_dot_product_attention(q, k, v, **options)
    except RuntimeError as error:
        if "pack_vnni2" not in str(error):
            raise
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, **options)


def attention(q: Tensor, k: Tensor, v: Tensor, start_pos: int, capture: bool = False) -> tuple[Tensor, Tensor | None]:
    """Causal attention of T queries at positions start_pos.. over S keys at positions 0..S-1.

    q: (B, H, T, D); k, v: (B, K, S, D). Returns the output (B, H, T, D) and, only when
    `capture` is set, the attention probabilities (B, H, T, S) in fp32.
    """
    n_queries, n_keys = q.shape[2], k.shape[2]
    mask = None
    if not capture and n_queries == n_keys > 1:
        # A whole sequence from position 0 (training, prefill): SDPA's own causal kernel is faster.
        return _sdpa(q, k, v, is_causal=True, enable_gqa=k.shape[1] != q.shape[1]), None
    if n_queries > 1:
        # Query t sits at absolute position start_pos + t and may see keys up to it.
        query_pos = torch.arange(start_pos, start_pos + n_queries, device=q.device)[:, None]
        mask = torch.arange(n_keys, device=q.device)[None, :] <= query_pos  # (T, S)
    if not capture:
        out = _sdpa(q, k, v, attn_mask=mask, enable_gqa=k.shape[1] != q.shape[1])
        return out, None
    group = q.shape[1] // k.shape[1]
    k32 = k.float().repeat_interleave(group, dim=1)  # (B, H, S, D)
    scores = q.float() @ k32.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = probs.to(v.dtype) @ v.repeat_interleave(group, dim=1)
    return out, probs


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.kv_heads, args.head_dim
        self.wq = Linear(args.dim, args.n_heads * args.head_dim, bias=False)
        self.wk = Linear(args.dim, args.kv_heads * args.head_dim, bias=False)
        self.wv = Linear(args.dim, args.kv_heads * args.head_dim, bias=False)
        self.wo = Linear(args.n_heads * args.head_dim, args.dim, bias=False)
        self.fused_qkv: Tensor | None = None  # ((H + 2K)·D, C), set by kernels.weight_layout.prepare_for_inference

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        fused = self.fused_qkv
        if fused is not None and fused.data_ptr() == self.wq.weight.data_ptr():  # still sharing the weights
            return project(x, fused).split([self.wq.weight.shape[0], self.wk.weight.shape[0], self.wv.weight.shape[0]], -1)
        return self.wq(x), self.wk(x), self.wv(x)

    def forward(self, x, freqs, layer, cache, start_pos, capture):
        B, T, _ = x.shape
        q, k, v = self.project_qkv(x)
        q = apply_rope(q.view(B, T, self.n_heads, self.head_dim), freqs)
        k = apply_rope(k.view(B, T, self.n_kv_heads, self.head_dim), freqs)
        v = v.view(B, T, self.n_kv_heads, self.head_dim)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|K, T, D)
        if cache is not None:
            k, v = cache.store(layer, k, v)  # (B, K, S, D)
        out, probs = attention(q, k, v, start_pos, capture)
        return self.wo(out.transpose(1, 2).reshape(B, T, -1)), probs


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = Linear(dim, hidden_dim, bias=False)  # gate
        self.w2 = Linear(hidden_dim, dim, bias=False)  # down
        self.w3 = Linear(dim, hidden_dim, bias=False)  # up
        self.fused_gate_up: Tensor | None = None  # (2·hidden, C), set by kernels.weight_layout.prepare_for_inference

    def forward(self, x: Tensor) -> Tensor:
        fused = self.fused_gate_up
        if fused is not None and fused.data_ptr() == self.w1.weight.data_ptr():
            gate, up = project(x, fused).chunk(2, dim=-1)
        else:
            gate, up = self.w1(x), self.w3(x)
        return self.w2(F.silu(gate) * up)  # SwiGLU


class TransformerBlock(nn.Module):
    def __init__(self, layer: int, args: ModelArgs):
        super().__init__()
        self.layer = layer
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args.dim, args.ffn_hidden_dim)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)

    def forward(self, x, freqs, cache, start_pos, capture):
        attn_out, probs = self.attention(self.attention_norm(x), freqs, self.layer, cache, start_pos, capture)
        h = x + attn_out
        return h + self.feed_forward(self.ffn_norm(h)), probs


@dataclass(frozen=True)
class ForwardOutput:
    """Logits (B, T, V) in fp32 (T = 1 when only the last position was asked for) and, when
    captured, one attention tensor (B, H, T, S) per layer."""

    logits: Tensor
    attention: list[Tensor] | None = None


class Transformer(nn.Module):
    """Stateless LLaMA model: all per-generation state lives in the `KVCache` passed to `forward`."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(i, args) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        # A plain attribute, not a buffer, as in Meta's code: `model.to(bfloat16)` must not
        # cast the complex fp32 rotations (and a meta-device build must not leave them empty).
        self.freqs = rotations(args.head_dim, args.rope_theta, args.rope_scaling, 0, args.max_seq_len)
        # The dtype of the residual stream between the blocks; None: the embeddings'. fp32 under 16-bit weights
        # (set by kernels.weight_layout), so that neither the sums of the blocks' outputs nor the norms are rounded.
        self.residual_dtype: torch.dtype | None = None

    def reset_rope(self) -> None:
        """Recompute the rotary table on the CPU; needed after building on the meta device."""
        a = self.args
        self.freqs = rotations(a.head_dim, a.rope_theta, a.rope_scaling, 0, a.max_seq_len, device="cpu")

    def rope(self, start_pos: int, length: int, device=None) -> Tensor:
        """The rotations of positions start_pos.. for one forward pass, (length, D/2) complex."""
        a, end = self.args, start_pos + length
        if a.rope_type == "dynamic" and end > a.rope_scaling["original_max_position_embeddings"]:
            # Dynamic NTK stretches the base to the sequence seen so far, recomputed on every pass
            # beyond the trained length (as transformers' dynamic_rope_update does). The keys already
            # cached keep the rotation they were stored with, exactly as in transformers' cache.
            return rotations(a.head_dim, a.rope_theta, a.rope_scaling, start_pos, end, seq_len=end, device=device)
        if device is not None:
            self.freqs = self.freqs.to(device)  # no-op after the first call on a device
        return self.freqs[start_pos:end]

    def forward(
        self,
        tokens: Tensor,
        cache: KVCache | None = None,
        capture_attention: bool = False,
        last_only: bool = False,
    ) -> ForwardOutput:
        """Run `tokens` (B, T) after whatever `cache` already holds, and advance the cache."""
        start_pos = cache.length if cache is not None else 0
        T = tokens.shape[1]
        if start_pos + T > self.args.max_seq_len:
            raise ValueError(f"sequence of {start_pos + T} positions exceeds max_seq_len {self.args.max_seq_len}")
        h = self.embed(tokens)  # (B, T, C)
        freqs = self.rope(start_pos, T, h.device)
        captured = [] if capture_attention else None
        for layer in self.layers:
            h, probs = layer(h, freqs, cache, start_pos, capture_attention)
            if captured is not None:
                captured.append(probs)
        if cache is not None:
            cache.length = start_pos + T
        if last_only:
            h = h[:, -1:]
        logits = self.output(self.norm(h)).float()  # (B, T, V)
        return ForwardOutput(logits, captured)

    def input_device(self) -> torch.device:
        """Where token ids go in: the device the embedding computes on (the GPU for a model on CUDA)."""
        return _execution_device(self.tok_embeddings)

    def embed(self, tokens: Tensor) -> Tensor:
        """The residual stream entering the first layer: the tokens' embedding rows, in the stream's dtype."""
        h = self.tok_embeddings(tokens)
        return h if self.residual_dtype is None else h.to(self.residual_dtype)

    def new_cache(self, max_len: int | None = None, batch_size: int = 1) -> KVCache:
        devices = [_execution_device(layer) for layer in self.layers]
        wk = self.layers[0].attention.wk  # keys and values are stored as they leave the projections
        dtype = wk.weight.dtype if isinstance(wk, nn.Linear) else self.residual_dtype or self.tok_embeddings.weight.dtype
        return KVCache(self.args, max_len or self.args.max_seq_len, batch_size, dtype, devices)


def _execution_device(module: nn.Module) -> torch.device:
    # accelerate's dispatch (big models, offload) hooks each layer with the device it computes on;
    # the layer's own weights may sit on the meta device between calls.
    device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    return torch.device(device) if device is not None else next(module.parameters()).device
