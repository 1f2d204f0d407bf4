"""The conditional UNet backbone: eps_theta(x_t, t, c).

Layout (Ho et al. 2020 appendix B, with improved-DDPM's scale-shift norm):
    in conv -> [ResBlock x num_res_blocks (+ attention) , Downsample] per level
            -> middle ResBlock, attention, ResBlock
            -> [ResBlock x (num_res_blocks + 1) on concatenated skips (+ attention), Upsample] per level
            -> GroupNorm, SiLU, out conv (zero-initialised)
Conditioning: emb = MLP(sinusoid(t)) + cond_embedding(c) (UNet.condition), fed to every ResBlock as (scale, shift) (FiLM), where
    cond "class": c (B,) int, cond_embedding = a table; class id `num_classes` is the learned null condition;
    cond "text":  c (B, text_dim) unit sentence embeddings (text_tokens = 0), or (B, 1 + text_tokens, text_dim):
                  row 0 the sentence embedding, rows 1.. the caption's token states, zero rows for padding
                  (text/condition.py makes it). Without tokens (or with model.sentence_film, formats 3-4), the
                  sentence embedding e goes through cond_embedding = Linear-SiLU-Linear of sqrt(text_dim) e
                  (coordinates of unit variance, like the class table's N(0, 1) rows: with the unit vectors as they
                  are, the condition barely moved the time embedding and a 300-step run ignored it); the zero
                  vector (never a unit embedding) marks "no caption" and is replaced by a learned null embedding.
                  With tokens, every block that has self-attention (and the middle) is followed by cross-attention
                  from its positions to context = LayerNorm([null token; token states]) (B, 1 + text_tokens,
                  text_dim), padding masked out; the learned null token is always there, so a null caption attends
                  to it alone and no softmax row is empty; with cross_positions each query also carries a fixed
                  code of its place (x, y) in the picture, so a word like "left" or the first object of "X above Y"
                  can be sent where it belongs. Since format 5 a token model reads the caption through the
                  cross-attention alone: the sentence embedding's FiLM gave every place all of the caption's
                  colours, and two-object scenes came out with the colours swapped (docs/text.md);
    cond "none":  c is ignored (an unconditional model).
The null condition is what classifier-free guidance drops to (guidance.py). Why tokens: the sentence embedding is a
mean over words, and "a red circle above a blue square" and "a blue circle above a red square" have cosine 0.99
there (all-MiniLM-L6-v2), "...on the left" and "...on the right" 0.99: which colour goes with which shape, and
where, is nearly gone before the UNet sees it. Attention over a single pooled vector would add nothing (softmax
over one key has weight 1), so cross-attention only pays over tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ddpm.config import ModelConfig
from ddpm.network.attention import Attention, CrossAttention
from ddpm.network.layers import ResBlock, group_norm, timestep_embedding, zero_init


class Level(nn.Module):
    """ResBlocks at one resolution, each optionally followed by self-attention and (text_dim > 0) cross-attention
    to the caption's tokens."""

    def __init__(self, chans: list[tuple[int, int]], emb_dim: int, dropout: float, attn: bool, heads: int,
                 text_dim: int = 0, positions: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(i, o, emb_dim, dropout) for i, o in chans)
        self.attns = nn.ModuleList(Attention(o, heads) if attn else nn.Identity() for _, o in chans)
        self.crosses = nn.ModuleList(CrossAttention(o, text_dim, heads, positions) if attn and text_dim
                                     else nn.Identity() for _, o in chans)


class UNet(nn.Module):
    """eps_theta: (x_t (B, C, H, W), t (B,) int, c) -> eps (B, C, H, W); c is (B,) int in [0, num_classes] for
    cond "class", (B, text_dim) or (B, 1 + text_tokens, text_dim) float for "text" (all zero: null), anything of
    batch B for "none"."""

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
        tokens = config.cond == "text" and config.text_tokens > 0
        self.sentence_film = config.cond == "text" and (not tokens or config.sentence_film)
        if self.sentence_film:
            self.text_mlp = nn.Sequential(nn.Linear(config.text_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            self.null_text = nn.Parameter(torch.randn(config.text_dim) / math.sqrt(config.text_dim))  # learned, ~unit norm
        cross_dim = config.text_dim if tokens else 0
        if tokens:
            self.context_norm = nn.LayerNorm(config.text_dim)
            self.null_token = nn.Parameter(torch.randn(config.text_dim))  # a key every caption has
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
            self.down.append(Level(chans, emb_dim, config.dropout, res in config.attention_resolutions, config.num_heads,
                                   cross_dim, config.cross_positions))
            if i < n_levels - 1:
                self.downsample.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
                res //= 2

        self.mid1 = ResBlock(cur, cur, emb_dim, config.dropout)
        self.mid_attn = Attention(cur, config.num_heads)
        self.mid_cross = (CrossAttention(cur, cross_dim, config.num_heads, config.cross_positions) if tokens
                          else nn.Identity())
        self.mid2 = ResBlock(cur, cur, emb_dim, config.dropout)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            chans = []
            for _ in range(config.num_res_blocks + 1):
                chans.append((cur + skips.pop(), w))
                cur = w
            self.up.append(Level(chans, emb_dim, config.dropout, res in config.attention_resolutions, config.num_heads,
                                 cross_dim, config.cross_positions))
            if i > 0:
                self.upsample.append(nn.Conv2d(cur, cur, 3, padding=1))
                res *= 2

        self.out_norm = group_norm(cur)
        self.out_conv = zero_init(nn.Conv2d(cur, config.channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        cond, context = self.condition(c)
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels)) + cond  # (B, 4ch)
        h = self.in_conv(x)
        hs = [h]
        for i, level in enumerate(self.down):
            for block, attn, cross in zip(level.blocks, level.attns, level.crosses):
                h = self._block(block, attn, cross, h, emb, context)
                hs.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                hs.append(h)
        h = self._block(self.mid1, self.mid_attn, self.mid_cross, h, emb, context)
        h = self._block(self.mid2, None, None, h, emb, context)
        for i, level in enumerate(self.up):
            for block, attn, cross in zip(level.blocks, level.attns, level.crosses):
                h = self._block(block, attn, cross, torch.cat([h, hs.pop()], dim=1), emb, context)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out_conv(F.silu(self.out_norm(h)))

    def condition(self, c: torch.Tensor) -> tuple[torch.Tensor | float, Context | None]:
        """The condition c as (the (B, 4ch) embedding added to the time embedding, the cross-attention context or
        None); see the module doc."""
        if self.config.cond == "class":
            return self.class_emb(c), None
        if self.config.cond != "text":
            return 0.0, None
        if c.dim() == 2 and not self.sentence_film:  # a token model would draw as if uncaptioned: refuse instead
            raise ValueError(f"this text model reads the caption's token states: its condition is (B, 1 + "
                             f"{self.config.text_tokens}, {self.config.text_dim}) (text/condition.py), got "
                             f"{tuple(c.shape)}")
        emb: torch.Tensor | float = 0.0
        if self.sentence_film:
            sentence = c if c.dim() == 2 else c[:, 0]  # (B, text_dim)
            is_null = (c.reshape(len(c), -1) == 0).all(dim=1, keepdim=True)  # (B, 1)
            sentence = torch.where(is_null, self.null_text.to(c.dtype), sentence)
            emb = self.text_mlp(sentence * math.sqrt(self.config.text_dim))  # unit vectors -> ~unit-variance coords
        if c.dim() == 2:
            return emb, None
        states = c[:, 1:]  # (B, L, text_dim), zero rows: padding
        keep = torch.cat([torch.ones_like(states[:, :1, 0], dtype=torch.bool), states.abs().amax(-1) > 0], dim=1)
        tokens = torch.cat([self.null_token.to(states.dtype).expand(len(c), 1, -1), states], dim=1)
        return emb, (self.context_norm(tokens), keep)  # (B, 1 + L, text_dim), (B, 1 + L) bool

    def _block(self, block: ResBlock, attn: nn.Module | None, cross: nn.Module | None, h: torch.Tensor,
               emb: torch.Tensor, context: Context | None) -> torch.Tensor:
        """cross(attn(block(h, emb)), context) (attn, cross skipped when None or without a context). With
        config.checkpointing, while training, the block's activations are not kept for backward but recomputed
        there (torch.utils.checkpoint, non-reentrant: dropout masks and autocast are replayed, so the gradients are
        those of the plain forward)."""
        if context is None or not isinstance(cross, CrossAttention):
            cross, context = None, None
        if self.config.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(_block_forward, block, attn, cross, h, emb, context, use_reentrant=False)
        return _block_forward(block, attn, cross, h, emb, context)


Context = tuple[torch.Tensor, torch.Tensor]  # (tokens (B, M, text_dim) layer-normed, keep (B, M) bool)


def _block_forward(block: ResBlock, attn: nn.Module | None, cross: CrossAttention | None, h: torch.Tensor,
                   emb: torch.Tensor, context: Context | None) -> torch.Tensor:
    h = block(h, emb)
    h = h if attn is None else attn(h)
    return h if cross is None or context is None else cross(h, *context)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
