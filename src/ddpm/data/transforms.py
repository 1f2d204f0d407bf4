"""Image transforms: one decoded file -> a square uint8 array (decode time, cached), and the per-batch random
crop and flip (train time).

Opening (`open_image`, the one way a file of a dataset or `ddpm noise --image` is opened): a file whose header
declares more than MAX_PIXELS (width x height) is refused before any pixel is decoded (ImageTooLarge).

Decode time (`decode_image`), in this order:
  1. EXIF orientation applied (a phone photo stored sideways comes out upright).
  2. Any PIL mode brought to L (1 channel) or RGB (3 channels):
       1, L, RGB, YCbCr, LAB, HSV, CMYK  -> PIL's conversion (CMYK naively, without an ICC profile)
       I;16*, I (16-bit grey)           -> v / 257, rounded (65535 -> 255); F is clipped to [0, 255]
       LA, La, RGBA, RGBa, PA, P with a transparency entry -> alpha-composited on `background`
     RGB -> L is ITU-R 601 luma; L -> RGB repeats the grey.
  3. Shorter side resized to `stored_size` (bicubic, antialiased; JPEGs first DCT-downscaled while decoding to
     no less than twice that), then the centre square kept: (stored_size, stored_size, C) uint8.

Train time (`random_crop`, `random_hflip`): `stored_size` is the training size S for centre crops, and
S + S // 8 for random crops (72 px for 64), from which each batch takes a random S x S window: random crops
translate by up to 1/9 of the side (scale is not jittered). Scaling to [-1, 1] is `common.pixels.to_model_range`.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ddpm.common.errors import UserError

from ddpm.config import CROPS, parse_background  # center | random; white | black | gray | #rrggbb

# The most pixels (width x height, as the header declares them) a file may have. The semantics are those of PIL's
# decompression-bomb limit (Image.MAX_IMAGE_PIXELS, 89,478,485): a count read from the header when the file is
# opened, so a refused file costs nothing. PIL's limit is lower for us: a PNG, TIFF, BMP or WebP is decoded at full
# size (only JPEG decodes at a reduced scale), up to 8 files at once (cache.py's workers), and only then shrunk to
# at most a few hundred pixels. 2**26 px (64 Mpx, 192 MiB as RGB per file) admits every camera photo up to 61 Mpx
# (9504 x 6336) and refuses what is only a header: a 9,400 x 9,400 PNG of a few hundred bytes, which PIL would
# accept and then allocate 265 MB for before finding it truncated.
MAX_PIXELS = 1 << 26


class ImageTooLarge(Exception):
    """A file whose header declares more than MAX_PIXELS; the message is the reason a skipped file is given."""


@contextlib.contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """PIL's Image.open (lazy: nothing decoded yet), refusing with ImageTooLarge a file that declares more than
    MAX_PIXELS. Every other failure is PIL's (UnidentifiedImageError, OSError, ...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit below is the lower one
        try:
            im = Image.open(path)
        except Image.DecompressionBombError:  # over twice PIL's limit: refused by PIL before we see the size
            raise ImageTooLarge(f"decompression bomb (over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels)") from None
    with im:
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise ImageTooLarge(f"decompression bomb ({w}x{h} pixels; at most {MAX_PIXELS:,} are read)")
        yield im


@dataclass(frozen=True)
class DecodeSpec:
    """Everything that decides the bytes of a decoded image (part of the cache key)."""

    size: int  # training size S
    channels: int  # 1 or 3
    crop: str = "center"  # center | random
    background: str = "white"  # what transparent pixels are composited on

    @property
    def stored_size(self) -> int:
        """Side of the stored square: S for centre crops, S + S // 8 for random crops."""
        return self.size if self.crop == "center" else self.size + self.size // 8

    @property
    def mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"


def to_mode(im: Image.Image, mode: str, background: tuple[int, int, int]) -> Image.Image:
    """Any PIL image -> mode 'L' or 'RGB', with transparency composited on `background` (see module doc)."""
    if im.mode.startswith("I;16") or im.mode == "I":
        grey = np.asarray(im, dtype=np.float64)  # (H, W), 16-bit values
        return Image.fromarray(np.round(np.clip(grey, 0, 65535) / 257).astype(np.uint8), "L").convert(mode)
    if im.mode == "F":
        return Image.fromarray(np.clip(np.asarray(im), 0, 255).round().astype(np.uint8), "L").convert(mode)
    if im.mode == "P" and "transparency" in im.info or im.mode in ("PA", "LA", "La", "RGBA", "RGBa"):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert(mode)
    if im.mode in ("CMYK", "YCbCr", "LAB", "HSV", "P", "1") and mode == "L":
        im = im.convert("RGB")  # a defined path to luma for every mode
    return im if im.mode == mode else im.convert(mode)


def fit_square(im: Image.Image, side: int) -> Image.Image:
    """Resize the shorter side to `side` (bicubic, antialiased), keep the centre square."""
    w, h = im.size
    scale = side / min(w, h)
    new = (max(side, round(w * scale)), max(side, round(h * scale)))
    im = im.resize(new, Image.Resampling.BICUBIC)
    left, top = (new[0] - side) // 2, (new[1] - side) // 2
    return im.crop((left, top, left + side, top + side))


def decode_image(im: Image.Image, spec: DecodeSpec) -> np.ndarray:
    """An opened (not yet loaded) PIL image -> (stored_size, stored_size, C) uint8, per the module doc."""
    side = spec.stored_size
    if im.format == "JPEG":
        im.draft(im.mode if im.mode in ("L", "RGB", "CMYK") else None, (2 * side, 2 * side))  # DCT downscale
    im = ImageOps.exif_transpose(im)
    im = to_mode(im, spec.mode, parse_background(spec.background))
    arr = np.asarray(fit_square(im, side), dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def load_image_file(path, size: int, channels: int) -> np.ndarray:
    """Decode one file to a (size, size, C) uint8 centre crop (used by `ddpm noise`)."""
    with open_image(path) as im:
        return decode_image(im, DecodeSpec(size, channels)).copy()


def read_image(path: Path, size: int, channels: int = 3) -> torch.Tensor:
    """One image file as the model would see it, uint8 (channels, size, size); a missing or unreadable file is a
    one-line UserError."""
    if not Path(path).is_file():
        raise UserError(f"image {path} does not exist")
    try:
        return torch.from_numpy(load_image_file(path, size, channels)).permute(2, 0, 1).contiguous()
    except Exception as e:
        raise UserError(f"cannot read image {path}: {e}") from None


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, P, P) uint8 -> (N, C, size, size) uint8: bilinear, antialiased, rounded (unchanged when P == size)."""
    if images.shape[-1] == size:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def luma(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 RGB -> (N, 1, H, W) uint8 grey: ITU-R 601 luma in PIL's fixed point (its RGB -> L),
    (19595 R + 38470 G + 7471 B + 2^15) >> 16."""
    w = torch.tensor([19595, 38470, 7471], dtype=torch.int32).view(1, 3, 1, 1)
    return (((images.to(torch.int32) * w).sum(1, keepdim=True) + (1 << 15)) >> 16).to(torch.uint8)


def random_crop(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """(B, C, P, P) -> (B, C, size, size): an independent uniform window per image (P == size: unchanged)."""
    p = x.shape[-1]
    if p == size:
        return x
    off = torch.randint(0, p - size + 1, (x.shape[0], 2), generator=generator)  # (B, [top, left])
    return torch.stack([img[:, t : t + size, l : l + size] for img, (t, l) in zip(x, off.tolist())])


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, P, P) -> (B, C, size, size), the central window."""
    o = (x.shape[-1] - size) // 2
    return x[..., o : o + size, o : o + size]


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image of (B, C, H, W) left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
