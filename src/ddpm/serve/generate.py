"""One generation for the web UI: sample (or edit or inpaint an uploaded image) with progress and x0 previews, then
PNGs that carry their settings (for an edit, the uploaded file's SHA-256 too).

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
from ddpm.data.inputs import file_sha256, read_mask
from ddpm.diffusion.editing import image_to_image_steps, inpainting_steps
from ddpm.diffusion.sampling import DEFAULT_JUMP, DEFAULT_REPEATS
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


@dataclass(frozen=True)
class EditInput:
    """An edit's uploads, checked and prepared as the run's training data when the request arrives (so a bad file
    is a 400, not a failed job): image (C, S, S) uint8, mask (1, S, S) bool (True = generate) for inpainting."""

    image: torch.Tensor
    mask: torch.Tensor | None
    sha256: str


def prepare_input(run: TrainedModel, request: GenerateRequest) -> EditInput | None:
    """The request's uploads as an EditInput (None for plain generation); a one-line UserError for a file that is not
    an image, a mask of another size than the image, or one that marks nothing."""
    if request.image is None:
        return None
    image, size = run.read_image(request.image)
    mask = (read_mask(request.mask, size, run.config.data, run.config.model.image_size)
            if request.mask is not None else None)
    return EditInput(image, mask, file_sha256(request.image))


def total_steps(run: TrainedModel, request: GenerateRequest) -> int:
    """Network evaluations per image of a request: the sampler's steps, the share image to image takes, or RePaint's
    (with its default resampling)."""
    steps = request.sampling.num_steps(run.schedule.num_steps)
    if request.mode == "edit":
        return image_to_image_steps(steps, request.strength)
    if request.mode == "inpaint":
        return inpainting_steps(steps, DEFAULT_JUMP, DEFAULT_REPEATS)
    return steps


def generate(run: TrainedModel, request: GenerateRequest, cond: Conditioning, checkpoint: str,
             report: Callable[[int, bytes | None], None] = lambda step, preview: None,
             edit: EditInput | None = None) -> Generation:
    """Draw request.n images of cond through the API (TrainedModel.sample_pairs, or edit / inpaint of `edit`'s
    image towards the request's prompt). report(step, preview PNG or None) after each denoising step."""
    n, c, steps = request.n, run.config.model, max(1, total_steps(run, request))
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

    negative = request.negative or None
    extra: dict[str, Any] = {}
    if edit is None:
        labels = cond.cond.expand(n, *cond.cond.shape)  # (n,) class ids or (n, D) embeddings
        x = run.sample_pairs(labels, torch.arange(n), request.sampling, negative=cond.negative, callback=callback)
    elif request.mode == "edit":
        x = run.edit(edit.image, request.prompt, n, request.strength, request.sampling, negative=negative,
                     callback=callback).images
        extra = {"mode": "edit", "strength": request.strength, "input_sha256": [edit.sha256]}
    else:
        x = run.inpaint(edit.image, edit.mask, request.prompt, n, request.sampling, negative=negative,
                        callback=callback).images
        extra = {"mode": "inpaint", "jump": DEFAULT_JUMP, "repeats": DEFAULT_REPEATS, "input_sha256": [edit.sha256]}
    images = to_uint8(x)  # (n, C, H, W)
    settings = run.provenance(request.sampling, checkpoint, prompt=request.prompt, negative=request.negative, n=n,
                              drawn=cond.label, negative_drawn=cond.negative_label, **extra)
    grid = png_bytes(make_grid(images, nrow=cols, scale=grid_scale), {**settings, "grid_columns": cols})
    single_scale = panel_scale(c.image_size, SINGLE_PX)
    singles = [png_bytes(make_grid(upscale(images[j:j + 1], single_scale), nrow=1, pad=0), {**settings, "index": j})
               for j in range(n)]
    return Generation(grid, singles, settings)
