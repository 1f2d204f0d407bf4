"""The UNet's building blocks: the timestep embedding, normalisation, and the residual block with scale-shift
conditioning."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017) of integer steps t: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def position_code(channels: int, h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """A fixed 2D sinusoidal code of every place of an h x w map: (channels, h, w), channels // 4 frequencies each
    for sin(f y), cos(f y), sin(f x), cos(f x) (any remainder of channels zero), y and x running over [-1, 1] from
    the first row (column) to the last. f_j = (pi / 2) 8^(j / (n - 1)), j = 0..n-1: the lowest is a quarter wave
    across the map (sin(f y) alone tells top from bottom), the highest two waves (8 px apart places differ).
    Coordinates in [-1, 1] rather than in pixels: the same place of the picture has the same code at any size."""
    n = channels // 4
    freqs = (math.pi / 2) * 8.0 ** (torch.arange(n, dtype=torch.float32, device=device) / max(n - 1, 1))  # (n,)
    ys = torch.linspace(-1, 1, h, device=device)[:, None] * freqs  # (h, n)
    xs = torch.linspace(-1, 1, w, device=device)[:, None] * freqs  # (w, n)
    rows = torch.cat([ys.sin(), ys.cos()], 1).T[:, :, None].expand(2 * n, h, w)
    cols = torch.cat([xs.sin(), xs.cos()], 1).T[:, None, :].expand(2 * n, h, w)
    return F.pad(torch.cat([rows, cols]), (0, 0, 0, 0, 0, channels - 4 * n))


def group_norm(channels: int) -> nn.GroupNorm:
    groups = math.gcd(32, channels)
    return nn.GroupNorm(groups, channels)


def zero_init(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """h = conv(SiLU(GN(x))); h = GN(h) * (1 + scale) + shift; out = skip(x) + conv(dropout(SiLU(h)))."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, H, W)
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (B, out, 1, 1) each
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h

