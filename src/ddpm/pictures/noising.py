"""`ddpm noise`: the forward process made visible, one panel per schedule (pictures drawn by visual.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from ddpm.data.dataset import BUILTIN, load_dataset
from ddpm.common.errors import UserError
from ddpm.diffusion.schedule import SCHEDULES, NoiseSchedule
from ddpm.data.transforms import load_image_file

DEFAULT_CLASS = "zebra"  # textured, so the loss of detail under noise is easy to see


def default_image(size: int) -> torch.Tensor:
    """The first test-split zebra of the built-in dataset, (1, size, size) uint8."""
    data = load_dataset(BUILTIN, size, channels=1, split="test")
    return data.images[int((data.labels == data.class_names.index(DEFAULT_CLASS)).nonzero()[0])]


def noising_command(
    image: Path | None, schedules: list[str], num_steps: int, size: int, frames: int, seed: int, out: Path
) -> dict[str, Path]:
    """Write the animation, strip and alpha_bar plot for `image` (or the default zebra); return their paths."""
    from ddpm.pictures.grid import save_noising

    unknown = [s for s in schedules if s not in SCHEDULES]
    if unknown or not schedules:
        raise UserError(f"unknown schedule(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(SCHEDULES)}")
    if num_steps < 2:
        raise UserError("--timesteps must be at least 2")
    if image is None:
        x = default_image(size)
    else:
        if not image.is_file():
            raise UserError(f"image {image} does not exist")
        try:
            x = torch.from_numpy(load_image_file(image, size, channels=3)).permute(2, 0, 1).contiguous()
        except Exception as e:
            raise UserError(f"cannot read image {image}: {e}") from None
    return save_noising(x, [NoiseSchedule.create(s, num_steps) for s in schedules], out, num_frames=frames, seed=seed)
