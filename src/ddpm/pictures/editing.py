"""The pictures of editing: a grid with each input beside what was made from it, and an interpolation as an
animated GIF and a PNG strip. Images are uint8 (N, C, H, W), as everywhere in pictures/."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from ddpm.pictures.grid import make_grid

MASK_GREY = 128  # what the region to generate shows in the input's panel


def masked(inputs: torch.Tensor, generate: torch.Tensor) -> torch.Tensor:
    """inputs (K, C, H, W) with the region to generate ((1, H, W) or (K, 1, H, W) bool) painted grey."""
    return torch.where(generate.to(inputs.device), torch.full_like(inputs, MASK_GREY), inputs)


def edit_grid(inputs: torch.Tensor, results: torch.Tensor, labels: list[str] | None = None, scale: int = 2
              ) -> Image.Image:
    """One row per input: the input (K, C, H, W), then its n results (K * n, C, H, W), row by row."""
    k = len(inputs)
    n = len(results) // k
    rows = [torch.cat([inputs[r:r + 1], results[r * n:(r + 1) * n]]) for r in range(k)]
    return make_grid(torch.cat(rows), nrow=n + 1, labels=labels, scale=scale)


def morph_paths(out_gif: Path) -> dict[str, Path]:
    """The files save_morph writes for `out_gif`: {"animation": GIF, "strip": <stem>.png beside it}."""
    out_gif = Path(out_gif)
    return {"animation": out_gif, "strip": out_gif.with_suffix(".png")}


def save_morph(frames: torch.Tensor, out_gif: Path, scale: int = 4, fps: float = 6.0, pause_s: float = 1.0
               ) -> tuple[dict[str, Path], Image.Image]:
    """Write the frames (F, C, H, W) as a GIF that plays forth and back (the ends held `pause_s` s) and return its
    paths and the strip (one row, the caller writes it with its metadata)."""
    paths = morph_paths(out_gif)
    pictures = [make_grid(f[None], nrow=1, scale=scale) for f in frames]
    loop = pictures + pictures[-2:0:-1]  # forth and back
    ms = round(1000 / fps)
    durations = [ms + (round(1000 * pause_s) if i in (0, len(frames) - 1) else 0) for i in range(len(loop))]
    loop[0].save(paths["animation"], format="GIF", save_all=True, append_images=loop[1:], duration=durations, loop=0)
    return paths, make_grid(frames, nrow=len(frames), scale=max(1, scale // 2))
