"""The conditional UNet backbone: eps_theta(x_t, t, c).

Layout (Ho et al. 2020 appendix B, with improved-DDPM's scale-shift norm):
    in conv -> [ResBlock x num_res_blocks (+ attention) , Downsample] per level
            -> middle ResBlock, attention, ResBlock
            -> [ResBlock x (num_res_blocks + 1) on concatenated skips (+ attention), Upsample] per level
            -> GroupNorm, SiLU, out conv (zero-initialised)
Conditioning: emb = MLP(sinusoid(t)) + cond_embedding(c), fed to every ResBlock as (scale, shift) (FiLM), where
    cond "class": c (B,) int, cond_embedding = a table; class id `num_classes` is the learned null condition;
    cond "text":  c (B, text_dim) unit sentence embeddings, cond_embedding = Linear-SiLU-Linear of sqrt(text_dim) c
                  (coordinates of unit variance, like the class table's N(0, 1) rows: with the unit vectors as
                  they are, the condition barely moved the time embedding and a 300-step run ignored it); the zero
                  vector (never a unit embedding) marks "no caption" and is replaced by a learned null embedding;
    cond "none":  c is ignored (an unconditional model).
The null condition is what classifier-free guidance drops to (guidance.py). A pooled sentence embedding is one
vector, so attention over it would be softmax over a single key (weight 1): a linear map of the embedding added
to every position, which the scale-shift path already gives; hence no cross-attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ddpm.config import ModelConfig
from ddpm.network.attention import Attention
from ddpm.network.layers import ResBlock, group_norm, timestep_embedding, zero_init


class Level(nn.Module):
    """ResBlocks at one resolution, each optionally followed by attention."""

    def __init__(self, chans: list[tuple[int, int]], emb_dim: int, dropout: float, attn: bool, heads: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(i, o, emb_dim, dropout) for i, o in chans)
        self.attns = nn.ModuleList(Attention(o, heads) if attn else nn.Identity() for _, o in chans)


class UNet(nn.Module):
    """eps_theta: (x_t (B, C, H, W), t (B,) int, c) -> eps (B, C, H, W); c is (B,) int in [0, num_classes] for
    cond "class", (B, text_dim) float for "text" (zero rows: null), anything of batch B for "none"."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        ch = config.base_channels
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if config.cond == "class":
            self.class_emb = nn.Embedding(config.num_classes + 1, emb_dim)
            self.null_id = config.num_classes
        else:  # text: the zero vector stands for the null caption; none: the condition is ignored
            self.null_id = 0
        if config.cond == "text":
            self.text_mlp = nn.Sequential(nn.Linear(config.text_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            self.null_text = nn.Parameter(torch.randn(config.text_dim) / math.sqrt(config.text_dim))  # learned, ~unit norm
        self.in_conv = nn.Conv2d(config.channels, ch, 3, padding=1)

        widths = [ch * m for m in config.channel_mults]
        n_levels = len(widths)
        res = config.image_size
        skips = [ch]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        cur = ch
        for i, w in enumerate(widths):
            chans = []
            for _ in range(config.num_res_blocks):
                chans.append((cur, w))
                cur = w
                skips.append(cur)
            self.down.append(Level(chans, emb_dim, config.dropout, res in config.attention_resolutions, config.num_heads))
            if i < n_levels - 1:
                self.downsample.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
                res //= 2

        self.mid1 = ResBlock(cur, cur, emb_dim, config.dropout)
        self.mid_attn = Attention(cur, config.num_heads)
        self.mid2 = ResBlock(cur, cur, emb_dim, config.dropout)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            chans = []
            for _ in range(config.num_res_blocks + 1):
                chans.append((cur + skips.pop(), w))
                cur = w
            self.up.append(Level(chans, emb_dim, config.dropout, res in config.attention_resolutions, config.num_heads))
            if i > 0:
                self.upsample.append(nn.Conv2d(cur, cur, 3, padding=1))
                res *= 2

        self.out_norm = group_norm(cur)
        self.out_conv = zero_init(nn.Conv2d(cur, config.channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels)) + self.cond_embedding(c)  # (B, 4ch)
        h = self.in_conv(x)
        hs = [h]
        for i, level in enumerate(self.down):
            for block, attn in zip(level.blocks, level.attns):
                h = self._block(block, attn, h, emb)
                hs.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                hs.append(h)
        h = self._block(self.mid2, None, self._block(self.mid1, self.mid_attn, h, emb), emb)
        for i, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attns):
                h = self._block(block, attn, torch.cat([h, hs.pop()], dim=1), emb)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out_conv(F.silu(self.out_norm(h)))

    def cond_embedding(self, c: torch.Tensor) -> torch.Tensor | float:
        """(B, 4ch) embedding of the condition c (see the module doc)."""
        if self.config.cond == "class":
            return self.class_emb(c)
        if self.config.cond == "text":
            is_null = (c == 0).all(dim=1, keepdim=True)  # (B, 1)
            c = torch.where(is_null, self.null_text.to(c.dtype), c)  # (B, text_dim)
            return self.text_mlp(c * math.sqrt(self.config.text_dim))  # unit vectors -> ~unit-variance coordinates
        return 0.0

    def _block(self, block: ResBlock, attn: nn.Module | None, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """attn(block(h, emb)) (no attention when attn is None). With config.checkpointing, while training, the
        block's activations are not kept for backward but recomputed there (torch.utils.checkpoint, non-reentrant:
        dropout masks and autocast are replayed, so the gradients are those of the plain forward)."""
        if self.config.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(_block_forward, block, attn, h, emb, use_reentrant=False)
        return _block_forward(block, attn, h, emb)


def _block_forward(block: ResBlock, attn: nn.Module | None, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    h = block(h, emb)
    return h if attn is None else attn(h)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
