"""Decode-time transforms (every PIL mode, EXIF orientation, resize + crop) and the per-batch crop/flip."""

import numpy as np
import pytest
import torch
from data_trees import exif_rotated_jpeg
from PIL import Image

from ddpm.data.transforms import DecodeSpec, center_crop, decode_image, parse_background, random_crop, to_mode

WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def pixel(im: Image.Image, mode: str, background=WHITE):
    return to_mode(im, mode, background).getpixel((0, 0))


def test_transparency_is_composited_on_the_background():
    clear_red = Image.new("RGBA", (2, 2), (255, 0, 0, 0))
    assert pixel(clear_red, "RGB") == WHITE and pixel(clear_red, "RGB", BLACK) == BLACK
    half_red = Image.new("RGBA", (2, 2), (255, 0, 0, 128))
    assert pixel(half_red, "RGB", BLACK) == (128, 0, 0)
    assert pixel(Image.new("LA", (2, 2), (0, 0)), "L") == 255
    assert pixel(Image.new("LA", (2, 2), (40, 255)), "RGB") == (40, 40, 40)
    p = Image.new("P", (2, 2), 0)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    p.info["transparency"] = 0
    assert pixel(p, "RGB") == WHITE
    p.putpixel((0, 0), 1)
    assert pixel(p, "RGB") == (10, 200, 30)


@pytest.mark.parametrize("im,mode,expected", [
    (Image.new("CMYK", (2, 2), (0, 0, 0, 0)), "RGB", WHITE),
    (Image.new("CMYK", (2, 2), (0, 255, 255, 0)), "RGB", (255, 0, 0)),
    (Image.new("CMYK", (2, 2), (0, 0, 0, 255)), "L", 0),
    (Image.fromarray(np.full((2, 2), 65535, np.uint16)), "L", 255),
    (Image.fromarray(np.full((2, 2), 257 * 100, np.uint16)), "RGB", (100, 100, 100)),
    (Image.new("I", (2, 2), 32768), "L", 128),
    (Image.new("1", (2, 2), 1), "RGB", WHITE),
    (Image.new("RGB", (2, 2), (255, 0, 0)), "L", 76),  # ITU-R 601 luma: 0.299 * 255
    (Image.new("L", (2, 2), 77), "RGB", (77, 77, 77)),
    (Image.new("YCbCr", (2, 2), (255, 128, 128)), "L", 255),
])
def test_every_mode_reaches_l_or_rgb(im, mode, expected):
    out = to_mode(im, mode, WHITE)
    assert out.mode == mode and out.getpixel((0, 0)) == expected


def test_exif_orientation_is_honoured(tmp_path):
    exif_rotated_jpeg(tmp_path / "r.jpg")
    with Image.open(tmp_path / "r.jpg") as im:
        x = decode_image(im, DecodeSpec(16, 1))  # upright 20x40: black on top, white below
    assert x.shape == (16, 16, 1)
    assert x[:4].mean() < 30 and x[-4:].mean() > 225


def test_shorter_side_resized_then_centre_square_kept():
    a = np.zeros((30, 90, 3), np.uint8)
    a[:, 30:60] = 255  # a white centre third of a wide image
    x = decode_image(Image.fromarray(a), DecodeSpec(16, 3))
    assert x.shape == (16, 16, 3) and x[:, 2:-2].min() > 240  # the kept square is the white centre
    x = decode_image(Image.fromarray(a), DecodeSpec(16, 3, crop="random"))
    assert x.shape == (18, 18, 3)


def test_random_crop_windows_are_uniform_and_per_image():
    x = torch.arange(18 * 18, dtype=torch.int32).view(1, 1, 18, 18).repeat(400, 1, 1, 1)
    y = random_crop(x, 16, torch.Generator().manual_seed(0))
    assert y.shape == (400, 1, 16, 16)
    top, left = y[:, 0, 0, 0] // 18, y[:, 0, 0, 0] % 18
    assert set(top.tolist()) == {0, 1, 2} and set(left.tolist()) == {0, 1, 2}
    assert torch.equal(center_crop(x[:1], 16)[0, 0, 0, 0], torch.tensor(19, dtype=torch.int32))
    assert random_crop(x[:, :, :16, :16], 16, torch.Generator()) .shape == (400, 1, 16, 16)


def test_background_names():
    assert parse_background("#ff8000") == (255, 128, 0) and parse_background("black") == BLACK
    with pytest.raises(ValueError, match="background"):
        parse_background("purple")
