"""The two pixel ranges and the conversions between them (imports nothing of the project).

    stored / shown   uint8 [0, 255], (N, C, H, W) with C = 1 (grayscale) or 3 (RGB)
    model            float [-1, 1], x = u / 127.5 - 1
"""

from __future__ import annotations

import torch
from PIL import Image


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (clamped, rounded)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def tensor_to_pil(x: torch.Tensor) -> list[Image.Image]:
    """(N, C, H, W) in [-1, 1] -> N PIL images (mode L or RGB)."""
    arr = to_uint8(x).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arr]
