"""What shape a dataset asks for, read from a sample of its images before training: colour or grey, and the image
size. `ddpm train` uses it where no flag or config file says otherwise (resolve.py).

    channels    3 when at least 10% of the sampled images have colour (a pixel is coloured when its channels
                differ by more than 16 of 255, an image when more than 1% of its pixels are), else 1
    image size  64, unless the median shorter side of the sampled images is smaller: then the largest multiple of
                8 not above it (at least 16), so no image is blown up by more than the sampling grid needs
The built-in sets: grey 28 px silhouettes (1, 28); coloured shapes rendered at 32 px (3, 32).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddpm.data.builtin import BUILTIN
from ddpm.data.folder import scan_folder
from ddpm.data.shapes_text import SHAPES_TEXT, SIZE
from ddpm.data.transforms import open_image

DEFAULT_SIZE = 64  # px: the reference dataset's training size (Animals-10 at 64x64)
SAMPLE = 64  # images read
COLOUR_SPREAD, COLOUR_PIXELS, COLOUR_IMAGES = 16, 0.01, 0.10


@dataclass(frozen=True)
class DataShape:
    channels: int
    image_size: int
    colour_why: str  # e.g. "58 of 64 sampled images have colour"
    size_why: str  # e.g. "the median shorter side is 375 px"
    colour_images: int = 0  # sampled images with colour (what `--channels 1` drops)


def probe_shape(source: str, sample: int = SAMPLE) -> DataShape:
    """The channels and image size a dataset asks for (see the module doc); a missing folder is a UserError."""
    if source.startswith("builtin:") and source == BUILTIN:
        return DataShape(1, 28, "the built-in silhouettes are grey", "the built-in silhouettes are 28 px")
    if source == SHAPES_TEXT:
        return DataShape(3, SIZE, "the generated shapes are coloured", f"the shapes are rendered at {SIZE} px")
    index = scan_folder(Path(source).expanduser())
    files = index.files
    picked = [files[round(i * (len(files) - 1) / max(1, sample - 1))] for i in range(min(sample, len(files)))]
    shorter, coloured = [], 0
    for entry in picked:
        found = _look(entry.path)
        if found is not None:
            shorter.append(found[0])
            coloured += found[1]
    if not shorter:
        return DataShape(3, DEFAULT_SIZE, "no sampled image could be read", "no sampled image could be read")
    n, median = len(shorter), int(np.median(shorter))
    channels = 3 if coloured >= COLOUR_IMAGES * n else 1
    colour_why = f"{coloured} of {n} sampled images have colour"
    if median >= DEFAULT_SIZE:
        return DataShape(channels, DEFAULT_SIZE, colour_why, f"the median shorter side is {median} px", coloured)
    size = max(16, median // 8 * 8)
    return DataShape(channels, size, colour_why, f"the median shorter side is {median} px, below {DEFAULT_SIZE}",
                     coloured)


def _look(path: Path) -> tuple[int, bool] | None:
    """(shorter side in px, whether it has colour) of one image file, or None when it cannot be read."""
    try:
        with open_image(path) as im:  # a file declaring too many pixels is not read (transforms.MAX_PIXELS)
            shorter = min(im.size)
            if im.mode in ("1", "L", "LA", "I", "I;16", "F"):
                return shorter, False
            im.draft("RGB", (64, 64))  # JPEG: decode at a reduced scale, enough to see colour
            small = im.convert("RGBA").convert("RGB")
            small.thumbnail((64, 64))
            px = np.asarray(small, dtype=np.int16).reshape(-1, 3)
    except Exception:  # noqa: BLE001 - an unreadable file is skipped here; training reports it
        return None
    spread = px.max(axis=1) - px.min(axis=1)
    return shorter, bool((spread > COLOUR_SPREAD).mean() > COLOUR_PIXELS)
