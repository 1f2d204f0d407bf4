"""Model size presets: `--model tiny|small|base|large` names a UNet width and depth and the optimiser settings that
go with it. The levels adapt to the image size: as many halvings as keep the lowest feature map at 7 px or more
(28 -> 14 -> 7; 32 -> 16 -> 8; 64 -> 32 -> 16 -> 8), at most five levels.

    preset  base  mults      blocks  attention          lr     batch  steps    for
    tiny     32   1,2,2,..   1       the lowest level   2e-3    64     1,000   the demo: 28 px grey on 2 CPU cores
    small    64   1,2,2,..   2       the lowest level   1e-3    64    10,000   a CPU run on your own images
    base    128   1,2,2,2    2       levels <= 16 px     2e-4   128   100,000   64 px RGB on one GPU (Animals-10)
    large   192   1,2,3,4    3       levels <= 32 px     1e-4   128   200,000   a larger GPU budget

tiny is measured (docs/demo.md); base is DDPM's 35.7M CIFAR-10 network (Ho et al. 2020: 128 channels, 2 blocks,
attention at 16 px, lr 2e-4) with one more level for 64 px; large follows improved-diffusion's ImageNet-64 shape
(Nichol & Dhariwal 2021: multipliers 1,2,3,4, 3 blocks, attention at 32, 16 and 8 px, lr 1e-4); small sits between.
Parameters and GFLOPs of each: README.md and bench/presets.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    base_channels: int
    channel_mults: tuple[int, ...]  # per level; shorter level lists take the first entries, longer repeat the last
    num_res_blocks: int
    attention_px: int  # self-attention at every level below the full resolution whose maps are at most this size
    # (0: the lowest level only)
    lr: float
    batch_size: int
    steps: int


PRESETS: dict[str, Preset] = {
    "tiny": Preset(32, (1, 2, 2), 1, 0, 2e-3, 64, 1_000),
    "small": Preset(64, (1, 2, 2), 2, 0, 1e-3, 64, 10_000),
    "base": Preset(128, (1, 2, 2, 2), 2, 16, 2e-4, 128, 100_000),
    "large": Preset(192, (1, 2, 3, 4), 3, 32, 1e-4, 128, 200_000),
}
MAX_LEVELS = 5


def level_sizes(image_size: int) -> list[int]:
    """Feature-map sizes of the levels: halve while the size divides evenly and stays >= 7 px (at most 5 levels)."""
    sizes = [image_size]
    while len(sizes) < MAX_LEVELS and sizes[-1] % 2 == 0 and sizes[-1] // 2 >= 7:
        sizes.append(sizes[-1] // 2)
    return sizes


def preset_fields(name: str, image_size: int) -> dict[str, dict[str, Any]]:
    """The config keys a preset sets for this image size: {"model": {...}, "train": {...}}."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[name]
    sizes = level_sizes(image_size)
    mults = tuple(p.channel_mults[min(i, len(p.channel_mults) - 1)] for i in range(len(sizes)))
    attention = tuple(s for s in sizes[1:] if s <= p.attention_px) or (sizes[-1],)  # never at full resolution
    return {
        "model": {"base_channels": p.base_channels, "channel_mults": list(mults), "num_res_blocks": p.num_res_blocks,
                  "attention_resolutions": list(attention)},
        "train": {"lr": p.lr, "batch_size": p.batch_size, "steps": p.steps},
    }
