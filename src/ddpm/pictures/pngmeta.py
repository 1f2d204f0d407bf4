"""How an image was made, written into its PNG as text chunks, so that it can be reproduced.

Every key of the metadata becomes one text chunk (tEXt, or iTXt when the value is not Latin-1, e.g. a prompt in
another script) holding the value as JSON, strings too, so that a prompt such as "5" or "null" reads back as the
string it was. `read_png_metadata` reads them back (chunks of other programs that are not JSON stay plain text).
    ddpm sample ... --out grid.png   ->   prompts, negative, seed, sampler, steps, guidance, eta, variance,
                                          checkpoint, checkpoint_step, n (and prompt, row, j for single images)
    ddpm serve (each download)       ->   prompt, negative, drawn, seed, sampler, steps, guidance, checkpoint, ...
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import IO, Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo


def png_info(metadata: dict[str, Any]) -> PngInfo:
    """One text chunk per metadata key, its value as JSON."""
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, json.dumps(value, ensure_ascii=False))
    return info


def save_png(image: Image.Image, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write `image` as PNG with one text chunk per metadata key."""
    image.save(path, format="PNG", pnginfo=png_info(metadata))
    return Path(path)


def png_bytes(image: Image.Image, metadata: dict[str, Any] | None = None) -> bytes:
    """`image` encoded as PNG in memory, with one text chunk per metadata key."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=png_info(metadata) if metadata else None)
    return buf.getvalue()


def read_png_metadata(path: str | Path | bytes | IO[bytes]) -> dict[str, Any]:
    """The text chunks of a PNG (a path, its bytes or a file object); JSON values decoded, plain strings kept."""
    with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as im:
        im.load()
        chunks = dict(getattr(im, "text", {}))
    out: dict[str, Any] = {}
    for key, value in chunks.items():
        try:
            out[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            out[key] = value
    return out
