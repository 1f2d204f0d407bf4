"""How an image was made, written into its PNG as text chunks, so that it can be reproduced.

Every key of the metadata becomes one text chunk (tEXt, or iTXt when the value is not Latin-1, e.g. a prompt in
another script) holding the value as JSON, strings too, so that a prompt such as "5" or "null" reads back as the
string it was. A string that is not valid Unicode (a lone surrogate, from a JSON request's "\ud800") is written
with JSON's ASCII escapes, which a text chunk can hold and which read back as the same string, so no value can stop
a PNG from being written. `read_png_metadata` reads them back (chunks of other programs that are not JSON stay plain text).
    ddpm sample ... --out grid.png   ->   prompts, negative, seed, sampler, steps, guidance, eta, variance,
                                          checkpoint, checkpoint_step, n (and prompt, row, j for single images)
    ddpm serve (each download)       ->   prompt, negative, drawn, seed, sampler, steps, guidance, checkpoint, ...
    ddpm edit / inpaint (and serve)  ->   mode, prompt, drawn, images, input_sha256, strength or jump and repeats,
                                          mask or box, and the sampling settings
    ddpm interpolate (the PNG strip) ->   mode, prompt_from, prompt_to, seed_a, seed_b, frames, sampling settings
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import IO, Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ddpm.common.parse import json_value


def png_info(metadata: dict[str, Any]) -> PngInfo:
    """One text chunk per metadata key, its value as JSON."""
    info = PngInfo()
    for key, value in metadata.items():
        text = json.dumps(value, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: UTF-8 cannot hold it, JSON's \udXXX escape can
            text = json.dumps(value)
        info.add_text(key, text)
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
            out[key] = json_value(value)
        except (ValueError, TypeError):  # a chunk of another program: kept as its text
            out[key] = value
    return out
