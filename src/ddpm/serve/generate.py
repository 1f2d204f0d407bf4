"""One generation for the web UI: sample with progress and x0 previews, then PNGs that carry their settings.

Image j of a request with seed s starts from the noise of (s, j), exactly as `ddpm sample`: the same prompt, seed,
sampler, steps and guidance give the same pictures in the browser and on the command line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ddpm.api import TrainedModel
from ddpm.common.pixels import to_uint8
from ddpm.pictures.grid import make_grid, panel_scale, upscale
from ddpm.pictures.pngmeta import png_bytes
from ddpm.serve.prompt import Conditioning
from ddpm.serve.request import GenerateRequest

GRID_CELL_PX = 96  # images are upscaled (nearest neighbour) to about this size in the grid
SINGLE_PX = 256  # ... and to about this size as single downloads
PREVIEWS = 25  # at most this many x0 previews per job


@dataclass
class Generation:
    """The finished pictures (PNG bytes) and the settings written into each."""

    grid: bytes
    images: list[bytes]
    settings: dict[str, Any]


def grid_columns(n: int) -> int:
    return math.ceil(math.sqrt(n))


def generate(run: TrainedModel, request: GenerateRequest, cond: Conditioning, checkpoint: str,
             report: Callable[[int, bytes | None], None] = lambda step, preview: None) -> Generation:
    """Draw request.n images of cond through the API (TrainedModel.sample_pairs). report(step, preview PNG or None)
    after each denoising step."""
    n, c, steps = request.n, run.config.model, request.sampling.num_steps(run.schedule.num_steps)
    every = max(1, math.ceil(steps / PREVIEWS))
    cols, grid_scale = grid_columns(n), panel_scale(c.image_size, GRID_CELL_PX)
    done = 0

    def callback(t: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
        nonlocal done
        done += 1
        preview = None
        if done % every == 0 or done == steps:
            preview = png_bytes(make_grid(to_uint8(x0_hat.float().cpu()), nrow=cols, scale=grid_scale))
        report(done, preview)

    labels = cond.cond.expand(n, *cond.cond.shape)  # (n,) class ids or (n, D) embeddings
    x = run.sample_pairs(labels, torch.arange(n), request.sampling, negative=cond.negative, callback=callback)
    images = to_uint8(x)  # (n, C, H, W)
    settings = run.provenance(request.sampling, checkpoint, prompt=request.prompt, negative=request.negative, n=n,
                              drawn=cond.label, negative_drawn=cond.negative_label)
    grid = png_bytes(make_grid(images, nrow=cols, scale=grid_scale), {**settings, "grid_columns": cols})
    single_scale = panel_scale(c.image_size, SINGLE_PX)
    singles = [png_bytes(make_grid(upscale(images[j:j + 1], single_scale), nrow=1, pad=0), {**settings, "index": j})
               for j in range(n)]
    return Generation(grid, singles, settings)
