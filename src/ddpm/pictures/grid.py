"""Pictures of the diffusion: image grids, the forward (noising) process under each schedule, alpha_bar curves and
training curves.

Images here are uint8 tensors (N, C, H, W) with C = 1 (grayscale) or 3 (RGB), as `ddpm.data` loads them, and come
out as PIL images ("L" or "RGB"). Text uses PIL's default font, grey on black. Plots are drawn with matplotlib's Agg
renderer through `matplotlib.figure.Figure`, never pyplot, so they work headless and leave the caller's matplotlib
backend and figure state alone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from ddpm.data.dataset import to_model_range, to_uint8
from ddpm.diffusion.forward import q_sample
from ddpm.diffusion.schedule import NoiseSchedule

TEXT_GREY = 190
CAPTION_H = 16  # height of one band of text above or below a row of panels, px
LABEL_GAP = 4  # space left and right of a row label, px
PANEL_PX = 128  # target size of one noising panel, px
STRIP_PX = 64  # target size of one cell of the noising strip, px
QUARTERS = ("[0, T/4)", "[T/4, T/2)", "[T/2, 3T/4)", "[3T/4, T)")  # the t ranges of loss_q0..loss_q3


def _check_images(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"expected uint8 images of shape (N, 1 or 3, H, W) with N >= 1, got {images.dtype} "
                         f"{tuple(images.shape)}")


def label_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The font of every label and caption in the pictures (Pillow's built-in: no font file needed)."""
    return ImageFont.load_default()


def _text_width(text: str) -> int:
    left, _, right, _ = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=label_font())
    return int(math.ceil(right - left))


def text_grey(mode: str) -> int | tuple[int, int, int]:
    """The labels' grey as a fill value for an image of `mode` ("L" or "RGB")."""
    return TEXT_GREY if mode == "L" else (TEXT_GREY,) * 3


def label_margin(labels: list[str] | None) -> int:
    """Width of the left margin that holds the row labels (0 without labels)."""
    if not labels:
        return 0
    return max(_text_width(s) for s in labels) + 2 * LABEL_GAP


def upscale(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Nearest-neighbour upscaling of (..., H, W) by an integer factor: each pixel becomes a scale x scale block."""
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    return images if scale == 1 else images.repeat_interleave(scale, -2).repeat_interleave(scale, -1)


def panel_scale(size: int, target: int = PANEL_PX) -> int:
    """The integer upscaling factor that brings a side of `size` px closest to `target` px (at least 1)."""
    return max(1, round(target / size))


def panel_box(
    index: int, height: int, width: int, pad: int = 2, left: int = 0, top: int = 0
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of cell `index` in the first row of a grid of height x width cells with `pad` px
    borders, whose top-left corner is at (left, top). This is where `make_grid` puts image `index` when index < nrow."""
    x = left + pad + index * (width + pad)
    y = top + pad
    return x, y, x + width, y + height


def make_grid(
    images: torch.Tensor, nrow: int, pad: int = 2, labels: list[str] | None = None, scale: int = 1
) -> Image.Image:
    """Tile uint8 images (N, C, H, W), C in {1, 3}, `nrow` per row, with `pad` px black borders around every cell.

    Image k goes to row k // nrow, column k % nrow. With h, w = H * scale, W * scale the result is
    (margin + pad + cols * (w + pad)) x (pad + rows * (h + pad)) px, where cols = min(nrow, N),
    rows = ceil(N / nrow) and margin = 0, or, when `labels` (one per row) is given, the width of the longest label plus
    8 px: each label is drawn grey, left-aligned and vertically centred, to the left of its row. `scale` upscales
    each image by nearest neighbour. Returns mode "L" for C = 1 (labels included) and "RGB" for C = 3.
    """
    _check_images(images)
    if nrow < 1 or pad < 0:
        raise ValueError(f"need nrow >= 1 and pad >= 0, got nrow={nrow}, pad={pad}")
    x = upscale(images, scale)
    n, c, h, w = x.shape
    cols, rows = min(nrow, n), math.ceil(n / nrow)
    if labels is not None and len(labels) != rows:
        raise ValueError(f"got {len(labels)} labels for {rows} rows; pass one label per row")
    margin = label_margin(labels)
    canvas = torch.zeros(c, pad + rows * (h + pad), margin + pad + cols * (w + pad), dtype=torch.uint8)
    for k in range(n):
        r, col = divmod(k, nrow)
        x0, y0, x1, y1 = panel_box(col, h, w, pad, left=margin, top=r * (h + pad))
        canvas[:, y0:y1, x0:x1] = x[k]
    arr = canvas[0].numpy() if c == 1 else canvas.permute(1, 2, 0).contiguous().numpy()
    im = Image.fromarray(arr)  # "L" for (H, W), "RGB" for (H, W, 3) uint8
    if labels:
        draw = ImageDraw.Draw(im)
        for r, text in enumerate(labels):
            draw.text((LABEL_GAP, pad + r * (h + pad) + h / 2), text, fill=text_grey(im.mode), font=label_font(), anchor="lm")
    return im


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
    if count < 1:
        raise ValueError(f"need at least one frame, got {count}")
    return torch.linspace(0, num_steps - 1, count, dtype=torch.float64).round().long()


def noised(image: torch.Tensor, schedules: list[NoiseSchedule], t: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """x_t of one uint8 image (C, H, W) at each step of t (F,) under each schedule, all with the same noise eps
    (drawn from `seed`), so panels differ only by the schedule and t. Returns uint8 (F, S, C, H, W)."""
    _check_images(image[None])
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


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # renders with Agg on savefig; no pyplot, no global backend switch

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def plot_alpha_bar(schedules: list[NoiseSchedule], out_png: Path) -> Path:
    """Plot alpha_bar_t (solid) and sqrt(alpha_bar_t) (dashed, the weight of x_0 in x_t) of each schedule against
    (t+1)/T, the fraction of the diffusion done after step t. Writes and returns out_png."""
    if not schedules:
        raise ValueError("pass at least one noise schedule")
    fig = _figure(6.4, 4.2)
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
    out_gif = Path(out_gif)
    out_gif.parent.mkdir(parents=True, exist_ok=True)
    frames = noising_frames(image, schedules, num_frames, seed)
    frame_ms = round(1000 / fps)
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms + round(1000 * pause_s)]
    frames[0].save(out_gif, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    strip = out_gif.with_name(f"{out_gif.stem}_strip.png")
    noising_strip(image, schedules, seed=seed).save(strip)
    alpha_bar = plot_alpha_bar(schedules, out_gif.with_name(f"{out_gif.stem}_alpha_bar.png"))
    return {"gif": out_gif, "strip": strip, "alpha_bar": alpha_bar}


def read_metrics(metrics_path: Path) -> list[dict]:
    """The records of a metrics JSON-lines file (blank lines skipped). Raises ValueError when there is none, when a
    line is not a JSON object, or when a record lacks "step" or "loss"."""
    records = []
    for n, line in enumerate(Path(metrics_path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{metrics_path}:{n} is not valid JSON: {e}") from None
        if not isinstance(rec, dict) or "step" not in rec or "loss" not in rec:
            raise ValueError(f"{metrics_path}:{n} is not a record with 'step' and 'loss'")
        records.append(rec)
    if not records:
        raise ValueError(f"{metrics_path} is empty: it holds no metrics records")
    return records


def ema_smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (as TensorBoard's smoothing); non-finite values are skipped."""
    out, acc, norm = [], 0.0, 0.0
    for v in values:
        if math.isfinite(v):
            acc, norm = weight * acc + (1 - weight) * v, weight * norm + (1 - weight)
        out.append(acc / norm if norm else float("nan"))
    return out


def plot_training_curve(metrics_path: Path, out_png: Path) -> Path:
    """Plot the loss of a metrics.jsonl against step: raw values faint, their EMA solid (lagging about 1/20 of the
    range), log y (linear if a value is <= 0), the learning rate on a right axis when logged. When the records hold
    loss_q0..loss_q3 (the eps-MSE for each quarter of t), a second panel plots them (smoothed). Writes and returns
    out_png."""
    records = read_metrics(metrics_path)
    steps = [r["step"] for r in records]
    quarters = [f"loss_q{i}" for i in range(4) if any(f"loss_q{i}" in r for r in records)]
    fig = _figure(7.0, 6.5 if quarters else 3.8)
    axes = fig.subplots(2 if quarters else 1, 1, sharex=True, squeeze=False)[:, 0]
    marker = "o" if len(records) == 1 else None
    weight = max(0.0, 1 - 20 / len(records))  # the EMA lags by about 1/20 of the plotted range

    loss = [float(r["loss"]) for r in records]
    ax = axes[0]
    ax.plot(steps, loss, color="C0", alpha=0.3, lw=1, marker=marker, label="loss")
    ax.plot(steps, ema_smooth(loss, weight), color="C0", lw=2, label="loss (EMA)")
    ax.set(ylabel="loss", title="Training loss")
    if "lr" in records[0]:
        lr_ax = ax.twinx()
        lr_ax.plot(steps, [r.get("lr", float("nan")) for r in records], color="grey", ls=":", lw=1, label="lr")
        lr_ax.set_ylabel("learning rate", color="grey")
        lr_ax.tick_params(axis="y", colors="grey")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.legend(loc="upper right")

    if quarters:
        ax = axes[1]
        for i, key in enumerate(quarters):
            q = [float(r.get(key, float("nan"))) for r in records]
            label = f"{key[5:]}: t in {QUARTERS[int(key[-1])]}"
            ax.plot(steps, ema_smooth(q, weight), color=f"C{i + 1}", marker=marker, label=label)
        ax.set(ylabel="eps MSE (EMA)", title="Loss per quarter of t (q0 = least noise)")
        ax.legend(loc="upper right", fontsize=8)
    for ax in axes:
        vals = [y for line in ax.get_lines() for y in line.get_ydata() if math.isfinite(y)]
        if vals and min(vals) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[-1].set_xlabel("step")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    return out_png
