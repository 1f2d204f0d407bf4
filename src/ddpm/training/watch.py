"""Watching a run while it trains (rank 0 only): a PNG sample grid every `sample_every` steps, quality measured
every `eval_every` steps by an Evaluator (evaluation/during.py implements it; the loop only calls it), the best
checkpoint by that measure kept as best.safetensors, and the run's index.html refreshed at each checkpoint.

Files, beside checkpoint.safetensors:
    samples/step-000500.png   the preview grid (one row per class or caption, the same seeds every time, so
                              successive grids compare); also in TensorBoard as samples/ema
    best.safetensors          the checkpoint (same format) of the evaluation with the best score so far
    index.html                the run's page (pictures/pages.py), with training_curve.png
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from ddpm.common.files import write_bytes_atomic
from ddpm.common.pixels import to_uint8
from ddpm.config import RunConfig
from ddpm.network.unet import UNet

SAMPLES_DIR = "samples"
BEST_NAME = "best.safetensors"


@dataclass
class EvalPoint:
    """One evaluation while training: `values` go to metrics.jsonl as eval/<name> and to TensorBoard; `score` is
    what best.safetensors is chosen by (lower is better; None: not comparable), `metric` its name."""

    values: dict[str, float]
    score: float | None = None
    metric: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # lines to print once (e.g. how the sample size was chosen)


class Evaluator(Protocol):
    def __call__(self, step: int, ema: UNet, config: RunConfig, train_seconds: float) -> EvalPoint:
        """Measure the EMA model at `step`; `train_seconds`: wall time spent training since the last evaluation
        (what an evaluator may size itself by)."""
        ...


def sample_png_path(out_dir: Path, step: int) -> Path:
    return out_dir / SAMPLES_DIR / f"step-{step:06d}.png"


def write_sample_png(grid: torch.Tensor, out_dir: Path, step: int) -> Path:
    """grid: (C, H, W) float in [0, 1] (training.metrics.preview_grid) -> samples/step-XXXXXX.png, atomically."""
    from PIL import Image

    pixels = to_uint8(grid * 2 - 1).cpu()  # (C, H, W), the one float -> uint8 conversion
    image = Image.fromarray(pixels[0].numpy(), "L") if pixels.shape[0] == 1 else \
        Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    path = sample_png_path(out_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buf.getvalue())
    return path


def refresh_page(out_dir: Path) -> dict[str, Path]:
    """training_curve.png from metrics.jsonl, then index.html (every picture, the sample grids, the evaluations);
    returns what was written by name."""
    from ddpm.pictures.pages import write_run_index
    from ddpm.training.metrics import plot_training_curve, read_evals

    metrics, written, evals = out_dir / "metrics.jsonl", {}, []
    if metrics.is_file() and metrics.stat().st_size:
        evals = read_evals(metrics)
        try:
            written["training curve"] = plot_training_curve(metrics, out_dir / "training_curve.png")
        except ValueError:  # no training record yet
            pass
    written["index page"] = write_run_index(out_dir, evals)
    return written
