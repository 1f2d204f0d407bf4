"""Progress bars with an ETA for long operations (tqdm on stderr), and the step callbacks that drive them.

Training and the data cache have their own tqdm bars (training/loop.py, data/cache.py); sampling and evaluation use these.
A disabled bar (`--quiet`) prints nothing.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ddpm.diffusion.sampler import StepCallback


def bar(total: int, desc: str, unit: str, enabled: bool = True) -> Any:
    """A tqdm bar on stderr showing done/total, rate and the estimated time left; prints nothing when disabled."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)


class SamplingBar:
    """A bar over the denoising steps of a sampling run: ceil(images / batch_size) batches x steps each, so the ETA
    moves every step rather than once a batch. Use it as the sampler's callback(t, x_t, x0_hat)."""

    def __init__(self, num_images: int, batch_size: int, steps: int, desc: str = "sample", enabled: bool = True) -> None:
        batches = max(1, math.ceil(num_images / max(1, batch_size)))
        self.bar = bar(batches * steps, f"{desc} ({num_images} img)", "step", enabled)

    def __call__(self, t: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
        self.bar.update(1)

    def __enter__(self) -> "SamplingBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def chain(*callbacks: StepCallback | None) -> StepCallback:
    """One step callback that calls each given one in turn (None entries are skipped)."""
    present = [c for c in callbacks if c is not None]

    def call(t: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
        for c in present:
            c(t, x_t, x0_hat)

    return call
