"""The forward process made visible (`ddpm noise`): an image noised step by step under each schedule, as an
animation, a strip of evenly spaced t, and the alpha_bar curves."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw

from ddpm.common.errors import UserError
from ddpm.common.pixels import to_model_range, to_uint8
from ddpm.diffusion.forward import q_sample
from ddpm.diffusion.schedule import SCHEDULES, NoiseSchedule
from ddpm.pictures.figure import figure
from ddpm.pictures.grid import (
    CAPTION_H,
    PANEL_PX,
    check_images,
    label_font,
    label_margin,
    make_grid,
    panel_box,
    panel_scale,
    text_grey,
)

STRIP_PX = 64  # target size of one cell of the noising strip, px
MAX_FRAMES = 1_000  # of the animation: 100 s at 10 frames a second; each frame is held in memory until saved


def frames_check(count: object) -> str | None:
    """None when `count` is a number of animation frames `noising_frames` takes, else what was expected."""
    ok = isinstance(count, int) and not isinstance(count, bool) and 1 <= count <= MAX_FRAMES
    return None if ok else f"a whole number from 1 to {MAX_FRAMES:,}"


def _common_num_steps(schedules: list[NoiseSchedule]) -> int:
    if not schedules:
        raise ValueError("pass at least one noise schedule")
    steps = {s.num_steps for s in schedules}
    if len(steps) != 1:
        raise ValueError(f"schedules must share the number of steps T to be compared at the same t, "
                         f"got {sorted(steps)}")
    return steps.pop()


def noising_timesteps(num_steps: int, count: int) -> torch.Tensor:
    """`count` integer steps evenly spaced from 0 to num_steps - 1, both included. Shape (count,), int64."""
    if frames_check(count):
        raise ValueError(f"the number of frames must be {frames_check(count)}, got {count!r}")
    return torch.linspace(0, num_steps - 1, count, dtype=torch.float64).round().long()


def noised(image: torch.Tensor, schedules: list[NoiseSchedule], t: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """x_t of one uint8 image (C, H, W) at each step of t (F,) under each schedule, all with the same noise eps
    (drawn from `seed`), so panels differ only by the schedule and t. Returns uint8 (F, S, C, H, W)."""
    check_images(image[None])
    x0 = to_model_range(image)[None]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    f = len(t)
    xs = [q_sample(s, x0.expand(f, -1, -1, -1), t, eps.expand(f, -1, -1, -1)) for s in schedules]
    return to_uint8(torch.stack(xs, dim=1))


def _noising_frame(panels: torch.Tensor, schedules: list[NoiseSchedule], t: int, scale: int, pad: int) -> Image.Image:
    """One frame: schedule names above the panels (S, C, H, W), alpha_bar_t below each, then "t = ... (T = ...)"."""
    grid = make_grid(panels, nrow=len(panels), pad=pad, scale=scale)
    frame = Image.new(grid.mode, (grid.width, grid.height + 3 * CAPTION_H))
    frame.paste(grid, (0, CAPTION_H))
    draw, grey, font = ImageDraw.Draw(frame), text_grey(frame.mode), label_font()
    h, w = panels.shape[-2] * scale, panels.shape[-1] * scale
    below = CAPTION_H + grid.height
    for i, s in enumerate(schedules):
        x0, _, x1, _ = panel_box(i, h, w, pad)
        ab = s.alpha_bar_of(t)
        draw.text(((x0 + x1) / 2, CAPTION_H / 2), s.name, fill=grey, font=font, anchor="mm")
        draw.text(((x0 + x1) / 2, below + CAPTION_H / 2), f"alpha_bar {ab:.3f}", fill=grey, font=font, anchor="mm")
    text = f"t = {t}  (T = {schedules[0].num_steps})"
    draw.text((frame.width / 2, below + 1.5 * CAPTION_H), text, fill=grey, font=font, anchor="mm")
    return frame


def noising_frames(
    image: torch.Tensor,
    schedules: list[NoiseSchedule],
    num_frames: int = 40,
    seed: int = 0,
    panel_px: int = PANEL_PX,
    pad: int = 2,
) -> list[Image.Image]:
    """Frames of one uint8 image (C, H, W) being destroyed by the forward process, one panel per schedule side by side.

    Frame i shows x_t at t = noising_timesteps(T, num_frames)[i] (0 to T-1) under every schedule, all with the same
    noise eps (from `seed`). Panels are upscaled by nearest neighbour to about `panel_px` px; panel s sits at
    panel_box(s, H * k, W * k, pad, top=CAPTION_H) with k = panel_scale(H, panel_px). Above each panel is the
    schedule's name, below it alpha_bar_t, and at the bottom t. All schedules must have the same T.
    """
    num_steps = _common_num_steps(schedules)
    t = noising_timesteps(num_steps, num_frames)
    x = noised(image, schedules, t, seed)
    scale = panel_scale(max(image.shape[-2:]), panel_px)
    return [_noising_frame(x[i], schedules, int(t[i]), scale, pad) for i in range(num_frames)]


def noising_strip(
    image: torch.Tensor, schedules: list[NoiseSchedule], columns: int = 10, seed: int = 0, cell_px: int = STRIP_PX
) -> Image.Image:
    """A still of the forward process: one row per schedule (labelled with its name), `columns` evenly spaced t from
    0 to T-1 (labelled above), the same noise eps everywhere."""
    num_steps = _common_num_steps(schedules)
    t = noising_timesteps(num_steps, columns)
    x = noised(image, schedules, t, seed).transpose(0, 1).flatten(0, 1)  # (S * F, C, H, W), row-major by schedule
    scale = panel_scale(max(image.shape[-2:]), cell_px)
    names = [s.name for s in schedules]
    grid = make_grid(x, nrow=columns, labels=names, scale=scale)
    strip = Image.new(grid.mode, (grid.width, grid.height + CAPTION_H))
    strip.paste(grid, (0, CAPTION_H))
    draw = ImageDraw.Draw(strip)
    h, w = image.shape[-2] * scale, image.shape[-1] * scale
    for i, step in enumerate(t.tolist()):
        x0, _, x1, _ = panel_box(i, h, w, left=label_margin(names))
        draw.text(((x0 + x1) / 2, CAPTION_H / 2 + 1), f"t={step}", fill=text_grey(strip.mode), font=label_font(), anchor="mm")
    return strip


def plot_alpha_bar(schedules: list[NoiseSchedule], out_png: Path) -> Path:
    """Plot alpha_bar_t (solid) and sqrt(alpha_bar_t) (dashed, the weight of x_0 in x_t) of each schedule against
    (t+1)/T, the fraction of the diffusion done after step t. Writes and returns out_png."""
    if not schedules:
        raise ValueError("pass at least one noise schedule")
    fig = figure(6.4, 4.2)
    ax = fig.add_subplot()
    for i, s in enumerate(schedules):
        u = (torch.arange(s.num_steps, dtype=torch.float64) + 1) / s.num_steps
        color = f"C{i}"
        ax.plot(u.numpy(), s.alpha_bar.numpy(), color=color, label=f"{s.name}: alpha_bar")
        ax.plot(u.numpy(), s.sqrt_alpha_bar.numpy(), color=color, ls="--", label=f"{s.name}: sqrt(alpha_bar)")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="(t + 1) / T", ylabel="value",
           title="Signal kept by the forward process  (x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps)")
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3)
    ax.legend()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    return out_png


def save_noising(
    image: torch.Tensor,
    schedules: list[NoiseSchedule],
    out_gif: Path,
    num_frames: int = 40,
    seed: int = 0,
    fps: float = 10.0,
    pause_s: float = 1.5,
) -> dict[str, Path]:
    """Write the noising animation `out_gif` (looping forever, the last frame held `pause_s` s longer), a still
    `<stem>_strip.png` (rows = schedules, 10 evenly spaced t) and `<stem>_alpha_bar.png` (alpha_bar vs t) next to
    it. Returns {"gif": ..., "strip": ..., "alpha_bar": ...}."""
    if fps <= 0 or pause_s < 0:
        raise ValueError(f"need fps > 0 and pause_s >= 0, got fps={fps}, pause_s={pause_s}")
    paths = noising_paths(out_gif)
    paths["gif"].parent.mkdir(parents=True, exist_ok=True)
    frames = noising_frames(image, schedules, num_frames, seed)
    frame_ms = round(1000 / fps)
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms + round(1000 * pause_s)]
    frames[0].save(paths["gif"], format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    noising_strip(image, schedules, seed=seed).save(paths["strip"])
    plot_alpha_bar(schedules, paths["alpha_bar"])
    return paths


def noising_paths(out_gif: Path) -> dict[str, Path]:
    """The files save_noising writes for `out_gif`: {"gif": ..., "strip": ..., "alpha_bar": ...}."""
    out_gif = Path(out_gif)
    return {"gif": out_gif, "strip": out_gif.with_name(f"{out_gif.stem}_strip.png"),
            "alpha_bar": out_gif.with_name(f"{out_gif.stem}_alpha_bar.png")}


def named_schedules(names: list[str], num_steps: int) -> list[NoiseSchedule]:
    """The schedules `ddpm noise --schedules` names, with T = num_steps; a bad name or T is a one-line UserError."""
    unknown = [s for s in names if s not in SCHEDULES]
    if unknown or not names:
        raise UserError(f"unknown schedule(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(SCHEDULES)}")
    if num_steps < 2:
        raise UserError("--timesteps must be at least 2")
    return [NoiseSchedule.create(s, num_steps) for s in names]
