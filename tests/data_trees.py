"""Tiny generated dataset trees for the data tests (no downloads): an Animals-10-like class tree with mixed sizes,
modes and an EXIF-rotated JPEG, one file of every bad kind, and a captioned tree."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

BAD_KINDS = {  # file name -> the reason's first words
    "truncated.jpg": "corrupt or truncated",
    "corrupt.png": "corrupt or truncated",
    "empty.jpg": "empty file",
    "notes.jpg": "not an image",
    "tiny.png": "too small",
    "bomb.png": "decompression bomb",
    "dangling.jpg": "unreadable",
}


def noise_image(seed: int, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


def exif_rotated_jpeg(path: Path) -> None:
    """40x20 stored, left half black, right half white, EXIF orientation 6 (display rotated 90 degrees clockwise):
    shown upright it is 20x40 with the black half on top."""
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(path, quality=95, exif=exif.tobytes())


def bomb_png(path: Path, side: int = 20_000) -> None:
    """A 1x1 PNG whose header claims side x side pixels (valid CRC): PIL refuses it on open."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    b = bytearray(buf.getvalue())
    i = b.index(b"IHDR")
    b[i + 4 : i + 12] = struct.pack(">II", side, side)
    b[i + 17 : i + 21] = struct.pack(">I", zlib.crc32(bytes(b[i : i + 17])))
    path.write_bytes(bytes(b))


def header_only_png(path: Path, width: int, height: int) -> None:
    """A PNG that is only a header: IHDR declaring width x height RGB (valid CRC) and the first 100 bytes of an IDAT,
    no IEND. A few hundred bytes that, fully decoded, would be width x height x 3 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress((b"\x00" + bytes(3 * width)) * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", rows)[:100])


def write_bad_files(folder: Path) -> None:
    """One file of each kind in BAD_KINDS."""
    buf = io.BytesIO()
    noise_image(0, (64, 64)).save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    noise_image(1, (64, 64)).save(buf, "PNG")
    png = bytearray(buf.getvalue())
    i = png.index(b"IDAT")
    png[i + 20 : i + 60] = bytes(40)
    (folder / "corrupt.png").write_bytes(bytes(png))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not a picture\n")
    Image.new("RGB", (4, 4), (9, 9, 9)).save(folder / "tiny.png")
    bomb_png(folder / "bomb.png")
    (folder / "dangling.jpg").symlink_to(folder / "no-such-file.jpg")


def animals_tree(root: Path, bad: bool = False) -> Path:
    """cane/ (3 good), gatto/ (3 good, EXIF-rotated among them), farfalla/ (2 good): mixed sizes and modes.
    With bad=True gatto/ also gets one file of every bad kind. Returns root."""
    (root / "cane").mkdir(parents=True)
    noise_image(1, (50, 30)).save(root / "cane" / "a.jpg")
    noise_image(2, (30, 60), "L").save(root / "cane" / "b.png")
    Image.new("RGBA", (40, 40), (255, 0, 0, 0)).save(root / "cane" / "c.png")  # fully transparent
    (root / "gatto" / "sub").mkdir(parents=True)
    exif_rotated_jpeg(root / "gatto" / "rotated.jpg")
    Image.new("CMYK", (33, 20), (0, 255, 255, 0)).save(root / "gatto" / "cmyk.jpg")
    Image.fromarray(np.full((24, 30), 65535, np.uint16)).save(root / "gatto" / "sub" / "deep16.png")
    (root / "farfalla").mkdir()
    p = Image.new("P", (32, 32), 1)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    p.save(root / "farfalla" / "pal.png", transparency=0)
    noise_image(3, (120, 80), "LA").save(root / "farfalla" / "la.png")
    (root / "farfalla" / "readme.txt").write_text("ignored: not an image extension")
    if bad:
        write_bad_files(root / "gatto")
    return root


def captioned_tree(root: Path, with_classes: bool) -> Path:
    """Hugging Face imagefolder captions: metadata.jsonl with file_name and text (a string or a list)."""
    rows = []
    if with_classes:
        for cls in ("owl", "fox"):
            (root / cls).mkdir(parents=True)
            for i in range(2):
                noise_image(i, (30, 30)).save(root / cls / f"{i}.png")
                text = f"a {cls} number {i}" if i == 0 else [f"{cls} {i}", f"another {cls}"]
                rows.append({"file_name": f"{cls}/{i}.png", "text": text})
    else:
        root.mkdir(parents=True)
        for i in range(3):
            noise_image(i, (30, 30)).save(root / f"{i}.png")
            rows.append({"file_name": f"{i}.png", "text": f"picture {i}"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root
