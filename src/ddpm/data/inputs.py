"""A user's image and mask for editing with a trained run, prepared exactly as the run's training data was.

    image   decoded as a dataset file is (transforms.decode_image: EXIF orientation, mode, shorter side resized,
            centre square) with the run's channels, background and crop; a run trained on random crops saw
            random S x S windows of an (S + S // 8) square, of which the centre window is taken here.
    mask    white (>= 128 after the same resizing, as grey) = to generate, black = to keep; or a box
            (x0, y0, x1, y1) in the image's pixels (x1, y1 exclusive), drawn white on black at the image's size.
            Its size must be the image's (after EXIF orientation); it must mark something to generate and keep
            something of the image.
Every refusal is a one-line UserError naming the file.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageOps

from ddpm.common.errors import UserError
from ddpm.config import DataConfig
from ddpm.data.transforms import DecodeSpec, center_crop, decode_image, open_image

Source = Path | bytes  # a file, or its bytes
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in the image's pixels; x1 and y1 exclusive


def _spec(data: DataConfig, size: int, channels: int, background: str | None = None) -> DecodeSpec:
    return DecodeSpec(size, channels, data.crop, background or data.background)


def _square(arr, size: int) -> torch.Tensor:
    """(P, P, C) uint8 from decode_image -> (C, size, size), the centre window."""
    return center_crop(torch.from_numpy(arr.copy()).permute(2, 0, 1), size).contiguous()


def _decoded(source: Source, spec: DecodeSpec, what: str) -> tuple[torch.Tensor, tuple[int, int]]:
    """The file (or a file's bytes, the web UI's upload) decoded by `spec` ((C, S, S) uint8) and its upright size
    (width, height)."""
    if isinstance(source, bytes):
        path, source = "(uploaded)", io.BytesIO(source)
    elif not Path(source).is_file():
        raise UserError(f"{what} {source} does not exist")
    else:
        path = source
    try:
        with open_image(source) as im:
            size = ImageOps.exif_transpose(im).size
            return _square(decode_image(im, spec), spec.size), size
    except UserError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"cannot read {what} {path}: {first}") from None


def read_input(path: Source, data: DataConfig, size: int, channels: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """An image file as the run's training data: (channels, size, size) uint8, and its upright (width, height)."""
    return _decoded(path, _spec(data, size, channels), "image")


def read_mask(path: Source, image_size: tuple[int, int], data: DataConfig, size: int) -> torch.Tensor:
    """A mask file for an image of upright size `image_size` -> (1, size, size) bool, True = to generate."""
    grey, mask_size = _decoded(path, _spec(data, size, 1, background="black"), "mask")
    if mask_size != image_size:
        raise UserError(f"mask {_name(path)} is {mask_size[0]}x{mask_size[1]} pixels but the image is "
                        f"{image_size[0]}x{image_size[1]}; give a mask of the image's size")
    return check_mask(grey >= 128, f"mask {_name(path)}")


def box_mask(box: Box, image_size: tuple[int, int], data: DataConfig, size: int) -> torch.Tensor:
    """A rectangle in an image of upright size `image_size` (width, height) -> (1, size, size) bool, True inside."""
    x0, y0, x1, y1 = box
    w, h = image_size
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise UserError(f"--box {x0},{y0},{x1},{y1} is not a rectangle inside the {w}x{h} image "
                        f"(need 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h})")
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).rectangle((x0, y0, x1 - 1, y1 - 1), fill=255)
    grey = _square(decode_image(canvas, _spec(data, size, 1, background="black")), size)
    return check_mask(grey >= 128, f"--box {x0},{y0},{x1},{y1}")


def check_mask(mask: torch.Tensor, what: str) -> torch.Tensor:
    """`mask` (True = generate) itself, or a UserError when it marks nothing or everything."""
    if not mask.any():
        raise UserError(f"{what} marks nothing to generate at the model's size (white = generate, black = keep)")
    if mask.all():
        raise UserError(f"{what} marks the whole image to generate; that is plain sampling (ddpm sample)")
    return mask


def _name(source: Source) -> str:
    return "(uploaded)" if isinstance(source, bytes) else str(source)


def file_sha256(path: Source) -> str:
    """The SHA-256 of a file's bytes (hex): which input an edited picture was made from."""
    if isinstance(path, bytes):
        return hashlib.sha256(path).hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
