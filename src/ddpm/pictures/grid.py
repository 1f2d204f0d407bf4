"""Image grids with row labels: how every picture of ddpm lays out its panels.

Images here are uint8 tensors (N, C, H, W) with C = 1 (grayscale) or 3 (RGB), as `ddpm.data` loads them, and come
out as PIL images ("L" or "RGB"). Text uses PIL's default font, grey on black.
"""

from __future__ import annotations

import math

import torch
from PIL import Image, ImageDraw, ImageFont

TEXT_GREY = 190
CAPTION_H = 16  # height of one band of text above or below a row of panels, px
LABEL_GAP = 4  # space left and right of a row label, px
PANEL_PX = 128  # target size of one panel of the noising animation and the web UI grid, px


def check_images(images: torch.Tensor) -> None:
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


MAX_SCALE = 64  # a 28 px image upscaled 64 times is 1,792 px; more only multiplies the memory a grid needs


def scale_check(scale: object) -> str | None:
    """None when `scale` is an upscaling factor `upscale` takes, else what was expected (`ddpm sample --scale`)."""
    ok = isinstance(scale, int) and not isinstance(scale, bool) and 1 <= scale <= MAX_SCALE
    return None if ok else f"a whole number from 1 to {MAX_SCALE}"


def upscale(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Nearest-neighbour upscaling of (..., H, W) by an integer factor: each pixel becomes a scale x scale block."""
    if scale_check(scale):
        raise ValueError(f"scale must be {scale_check(scale)}, got {scale!r}")
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
    check_images(images)
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


