"""How an image was made, written into its PNG as text chunks, so that it can be reproduced.

Every key of the metadata becomes one text chunk (tEXt, or iTXt when the value is not Latin-1, e.g. a prompt in
another script); values that are not strings are written as JSON. `read_png_metadata` reads them back.
    ddpm sample ... --out grid.png   ->   prompts, negative, seed, sampler, steps, guidance, eta, variance,
                                          checkpoint, checkpoint_step, n (and prompt, row, j for single images)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo


def save_png(image: Image.Image, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write `image` as PNG with one text chunk per metadata key."""
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    image.save(path, format="PNG", pnginfo=info)
    return Path(path)


def read_png_metadata(path: str | Path) -> dict[str, Any]:
    """The text chunks of a PNG; JSON values decoded, plain strings kept as they are."""
    with Image.open(path) as im:
        im.load()
        chunks = dict(getattr(im, "text", {}))
    out: dict[str, Any] = {}
    for key, value in chunks.items():
        try:
            out[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            out[key] = value
    return out
