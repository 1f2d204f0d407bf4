"""The reverse process made visible: x_t and the model's prediction x0_hat of every sample, step by step.

`Trajectory` is a sampler callback(t, x_t, x0_hat) that keeps up to `max_frames` evenly spaced steps as uint8 (so
a 1000-step run of 64 RGB images stays small). `save_trajectory` writes
    traj.gif        one frame per kept step: the grid of x_t (left) beside the grid of x0_hat (right)
    traj_x0.png     a strip of x0_hat: one row per grid row (its first image), 10 steps left to right
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from ddpm.common.pixels import to_uint8
from ddpm.pictures.grid import CAPTION_H, label_font, label_margin, make_grid, panel_box, text_grey

GAP = 12  # px between the x_t and x0_hat grids of a frame
STRIP_COLUMNS = 10
MAX_STRIP_ROWS = 16


class Trajectory:
    """Records x_t and x0_hat at `max_frames` evenly spaced steps of a `steps`-step sampling run (any number of
    batches: call k is step k % steps of batch k // steps). Images are kept as uint8 (N, C, H, W)."""

    def __init__(self, steps: int, max_frames: int = 40) -> None:
        if steps < 1 or max_frames < 1:
            raise ValueError(f"need steps >= 1 and max_frames >= 1, got steps={steps}, max_frames={max_frames}")
        self.steps = steps
        count = min(steps, max_frames)
        self.kept = sorted({round(i * (steps - 1) / max(1, count - 1)) for i in range(count)})  # always 0 and last
        self.t: dict[int, int] = {}  # step index -> t
        self.x_t: dict[int, list[torch.Tensor]] = {k: [] for k in self.kept}  # step index -> one tensor per batch
        self.x0: dict[int, list[torch.Tensor]] = {k: [] for k in self.kept}
        self.calls = 0

    def __call__(self, t: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
        k = self.calls % self.steps
        self.calls += 1
        if k in self.x_t:
            self.t[k] = int(t)
            self.x_t[k].append(to_uint8(x_t.detach().float().cpu()))
            self.x0[k].append(to_uint8(x0_hat.detach().float().cpu()))

    def frames(self) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
        """(step index, t, x_t, x0_hat) for each kept step, batches concatenated: (N, C, H, W) uint8 each."""
        if self.calls == 0:
            raise ValueError("the trajectory is empty: pass it as the sampler's callback before saving it")
        return [(k, self.t[k], torch.cat(self.x_t[k]), torch.cat(self.x0[k])) for k in self.kept if self.x_t[k]]


def _captioned(grid: Image.Image, title: str) -> Image.Image:
    out = Image.new(grid.mode, (grid.width, grid.height + CAPTION_H))
    out.paste(grid, (0, CAPTION_H))
    ImageDraw.Draw(out).text((out.width / 2, CAPTION_H / 2), title, fill=text_grey(out.mode), font=label_font(), anchor="mm")
    return out


def trajectory_frame(x_t: torch.Tensor, x0_hat: torch.Tensor, nrow: int, caption: str, labels: list[str] | None = None,
                     scale: int = 2) -> Image.Image:
    """One frame: the labelled grid of x_t, titled "x_t", beside the grid of x0_hat, titled "predicted x_0", and
    `caption` below both."""
    left = _captioned(make_grid(x_t, nrow=nrow, labels=labels, scale=scale), "x_t")
    right = _captioned(make_grid(x0_hat, nrow=nrow, scale=scale), "predicted x_0")
    frame = Image.new(left.mode, (left.width + GAP + right.width, left.height + CAPTION_H))
    frame.paste(left, (0, 0))
    frame.paste(right, (left.width + GAP, 0))
    ImageDraw.Draw(frame).text((frame.width / 2, left.height + CAPTION_H / 2), caption, fill=text_grey(frame.mode),
                               font=label_font(), anchor="mm")
    return frame


def x0_strip(traj: Trajectory, nrow: int, labels: list[str] | None = None, scale: int = 2) -> Image.Image:
    """x0_hat at STRIP_COLUMNS evenly spaced kept steps (columns, labelled with t) of the first image of each grid row
    (or the first images, with a single row), one sample per row."""
    frames = traj.frames()
    n = len(frames[0][3])
    rows = math.ceil(n / nrow)
    pick = [r * nrow for r in range(rows)] if rows > 1 else list(range(n))
    pick, names = pick[:MAX_STRIP_ROWS], (labels[: len(pick)] if labels and rows > 1 else None)
    columns = [frames[round(i * (len(frames) - 1) / max(1, min(STRIP_COLUMNS, len(frames)) - 1))]
               for i in range(min(STRIP_COLUMNS, len(frames)))]
    cells = torch.stack([col[3][pick] for col in columns], dim=1).flatten(0, 1)  # (rows * cols, C, H, W), row-major
    grid = make_grid(cells, nrow=len(columns), labels=names, scale=scale)
    strip = Image.new(grid.mode, (grid.width, grid.height + CAPTION_H))
    strip.paste(grid, (0, CAPTION_H))
    draw = ImageDraw.Draw(strip)
    h, w = cells.shape[-2] * scale, cells.shape[-1] * scale
    for i, (_, t, _, _) in enumerate(columns):
        x0, _, x1, _ = panel_box(i, h, w, left=label_margin(names))
        draw.text(((x0 + x1) / 2, CAPTION_H / 2 + 1), f"t={t}", fill=text_grey(strip.mode), font=label_font(), anchor="mm")
    return strip


def save_trajectory(traj: Trajectory, out_gif: Path, nrow: int, labels: list[str] | None = None, scale: int = 2,
                    fps: float = 8.0, pause_s: float = 2.0) -> dict[str, Path]:
    """Write the animation `out_gif` (looping, the final images held `pause_s` s) and `<stem>_x0.png` beside it.
    `nrow` images per grid row and `labels` (one per row) as in make_grid. Returns {"trajectory": ..., "x0 strip": ...}."""
    paths = trajectory_paths(out_gif)
    paths["trajectory"].parent.mkdir(parents=True, exist_ok=True)
    frames = traj.frames()
    images = [trajectory_frame(x_t, x0, nrow, f"step {k + 1} of {traj.steps}   t = {t}", labels, scale)
              for k, t, x_t, x0 in frames]
    ms = round(1000 / fps)
    durations = [ms] * (len(images) - 1) + [ms + round(1000 * pause_s)]
    images[0].save(paths["trajectory"], format="GIF", save_all=True, append_images=images[1:], duration=durations,
                   loop=0)
    x0_strip(traj, nrow, labels, scale).save(paths["x0 strip"])
    return paths


def trajectory_paths(out_gif: Path) -> dict[str, Path]:
    """The files save_trajectory writes for `out_gif`: {"trajectory": ..., "x0 strip": ...}."""
    out_gif = Path(out_gif)
    return {"trajectory": out_gif, "x0 strip": out_gif.with_name(f"{out_gif.stem}_x0.png")}
