"""Self-attention over feature-map positions, and the choice between the explicit and the fused kernel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ddpm.network.layers import group_norm, position_code, zero_init


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions, residual: x + proj(softmax(q k^T / sqrt(d)) v)."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # (B, heads, HW, d) each
        out = attend(q, k, v)  # (B, heads, HW, d)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


EXPLICIT_MAX_TOKENS = 576  # 24x24: up to here explicit_attention trains faster than the fused CPU kernel


CHUNK_ELEMENTS = 1 << 22  # attention-matrix elements (B_chunk * heads * N * M) per chunk: 8 MB in bf16


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over (B, heads, N, d) queries and (B, heads, M, d) keys and values; `keep` (B, M)
    bool, when given, leaves the keys where it is False out of every softmax (at least one True per row).

    Training in bf16 on CPU with N <= EXPLICIT_MAX_TOKENS: explicit_attention, whose forward + backward was 1.2-7x
    faster there than torch's fused CPU kernel over two runs of bench/attention.py; autograd keeps its bf16 weights
    (2 bytes per element) where the fused kernel keeps only a log-sum-exp per row. Otherwise (sampling, fp32, more
    tokens, CUDA) the fused kernel. Cross-attention (its padding in `keep`) takes the same path: with the fused
    kernel's masked backward (its four calls ~18 ms each), a step of the text demo took 1.19x as long (1.16-1.30x:
    594 against 493 ms, three paired timings of the median of 20 steps, batch 64, 2 threads)."""
    explicit = (q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.shape[-2] <= EXPLICIT_MAX_TOKENS
                and torch.is_grad_enabled() and q.requires_grad)
    if not explicit:
        mask = None if keep is None else keep[:, None, None, :]  # (B, 1, 1, M), broadcast over heads and queries
        # contiguous: the fused CPU kernel wants it
        return F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous(), attn_mask=mask)
    return explicit_attention(q, k, v, keep)


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """softmax_attention over chunks of the batch, each chunk's (B_chunk, heads, N, M) weights at most
    CHUNK_ELEMENTS (or one image, if that alone has more), so that the softmax and its backward work on a few MB
    at a time; images are independent, so the result is the unchunked one."""
    b, heads, n, _ = q.shape
    chunk = max(1, CHUNK_ELEMENTS // (heads * n * k.shape[-2]))
    if chunk >= b:
        return softmax_attention(q, k, v, keep)
    return torch.cat([softmax_attention(q[i:i + chunk], k[i:i + chunk], v[i:i + chunk],
                                        None if keep is None else keep[i:i + chunk]) for i in range(0, b, chunk)])


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """The textbook form: weights (B, heads, N, M) = softmax(q k^T / sqrt(d)), the scores of keys that `keep` (B, M)
    leaves out set to -inf first; out (B, heads, N, d) = weights v."""
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if keep is not None:
        scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1).to(v.dtype) @ v



class CrossAttention(nn.Module):
    """Multi-head attention from the H*W positions to a caption's tokens, residual:
        x + proj(softmax(q k^T / sqrt(d) over the kept tokens) v),  q = W_q GN(x),  (k, v) = W_kv context
    x (B, C, H, W); context (B, M, D_text) (already layer-normed by the UNet); keep (B, M) bool, False on padding
    (at least one True per row: the UNet always adds its learned null token). proj starts at zero, so a new
    block is the identity. With `positions`, q = W_q (GN(x) + P), P = layers.position_code (C, H, W): each query
    knows where in the picture it is, so "on the left" and "a red circle above a blue square" can reach the right
    places by attention (without it a place has only what zero padding leaves in its features)."""

    def __init__(self, channels: int, context_dim: int, num_heads: int, positions: bool = False) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.positions = positions
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, context: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        d = c // self.num_heads
        normed = self.norm(x)  # (B, C, H, W)
        if self.positions:
            normed = normed + position_code(c, h, w, x.device).to(normed.dtype)  # the same (C, H, W) for every image
        q = self.q(normed).reshape(b, self.num_heads, d, h * w).transpose(-1, -2)  # (B, heads, HW, d)
        k, v = self.kv(context).reshape(b, -1, 2, self.num_heads, d).permute(2, 0, 3, 1, 4).to(q.dtype)  # (B, heads, M, d)
        out = attend(q, k, v, keep)  # (B, heads, HW, d)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))
