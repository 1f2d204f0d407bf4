"""`ddpm edit`, `ddpm inpaint` and `ddpm interpolate` on a tiny untrained run: what they write (the PNG metadata
carries the settings and the input's SHA-256; the known pixels survive inpainting exactly), and bad input as one
line with exit code 2, nothing overwritten."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from ddpm.cli import main
from ddpm.pictures.pngmeta import read_png_metadata
from tests.helpers import untrained_run


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("editing")
    untrained_run(root / "run")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)).save(root / "in.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 16:] = 255
    Image.fromarray(mask).save(root / "mask.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "empty.png")
    Image.fromarray(np.zeros((20, 32), np.uint8)).save(root / "small.png")
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def _run(files, *argv: str) -> int:
    return main([a.replace("ROOT", str(files)) for a in argv] + ["--quiet"])


def test_edit_writes_a_grid_with_its_settings(files, capsys) -> None:
    out = files / "edit.png"
    assert _run(files, "edit", "--checkpoint", "ROOT/run", "--image", "ROOT/in.png", "--image", "ROOT/in.png",
                "--strength", "0.5", "dog", "-n", "3", "--steps", "6", "--scale", "1", "--out", str(out)) == 0
    meta = read_png_metadata(out)
    digest = hashlib.sha256((files / "in.png").read_bytes()).hexdigest()
    assert meta["mode"] == "edit" and meta["strength"] == 0.5 and meta["drawn"] == "dog" and meta["steps"] == 6
    assert meta["input_sha256"] == [digest, digest]
    with Image.open(out) as im:  # 2 rows of (input + 3 results), 16 px panels with 2 px borders, a label margin
        assert im.height == 2 + 2 * 18
    assert "grid:" in capsys.readouterr().out


def test_inpaint_keeps_the_known_half_of_the_grid(files) -> None:
    out = files / "inpaint.png"
    assert _run(files, "inpaint", "--checkpoint", "ROOT/run", "--image", "ROOT/in.png", "--mask", "ROOT/mask.png",
                "cat", "-n", "2", "--steps", "6", "--repeats", "2", "--jump", "2", "--scale", "1",
                "--out", str(out)) == 0
    meta = read_png_metadata(out)
    assert meta["mode"] == "inpaint" and meta["jump"] == 2 and meta["repeats"] == 2
    from ddpm.api import load_run

    expected = load_run(files / "run").read_image(files / "in.png")[0][0].numpy()  # (16, 16)
    with Image.open(out) as im:
        grid = np.asarray(im.convert("L"))
    right = grid.shape[1] - 2 * 18  # the two results are the last two panels
    for k in range(2):
        panel = grid[2:18, right + k * 18: right + k * 18 + 16]
        assert (panel[:, :8] == expected[:, :8]).all()


def test_interpolate_writes_a_gif_and_a_strip(files, capsys) -> None:
    out = files / "morph.gif"
    assert _run(files, "interpolate", "--checkpoint", "ROOT/run", "--from", "cat", "--to", "dog", "--frames", "4",
                "--steps", "5", "--out", str(out)) == 0
    with Image.open(out) as gif:
        assert gif.n_frames == 6  # forth and back: 4 + 2
    meta = read_png_metadata(files / "morph.png")
    assert meta["prompt_from"] == "cat" and meta["prompt_to"] == "dog" and meta["sampler"] == "ddim"
    assert meta["frames"] == 4


@pytest.mark.parametrize("argv,message", [
    (["edit", "--image", "ROOT/in.png", "--strength", "1.5"], "strength"),
    (["edit", "--image", "ROOT/in.png", "--strength", "-0.1"], "strength"),
    (["edit", "--image", "ROOT/broken.png"], "cannot read image"),
    (["edit", "--image", "ROOT/nothing.png"], "does not exist"),
    (["inpaint", "--image", "ROOT/in.png", "--mask", "ROOT/small.png"], "32x20 pixels but the image is 32x32"),
    (["inpaint", "--image", "ROOT/in.png", "--mask", "ROOT/empty.png"], "marks nothing"),
    (["inpaint", "--image", "ROOT/in.png", "--box", "0,0,40,8"], "not a rectangle inside"),
    (["inpaint", "--image", "ROOT/in.png", "--box", "0,0,8"], "x0,y0,x1,y1"),
    (["inpaint", "--image", "ROOT/in.png", "--box", "0,0,8,8", "--repeats", "0"], "repeats"),
    (["inpaint", "--image", "ROOT/in.png"], "one of the arguments --mask --box is required"),
    (["interpolate", "--from", "cat", "--sampler", "ddpm"], "deterministic sampler"),
    (["interpolate", "--from", "cat"], "nothing to interpolate"),
    (["interpolate", "--from", "cat", "--to", "dog", "--frames", "1"], "frames"),
])
def test_bad_input_is_one_line_and_exit_2(files, capsys, argv, message) -> None:
    out = files / ("bad.gif" if argv[0] == "interpolate" else "bad.png")
    try:
        code = _run(files, argv[0], "--checkpoint", "ROOT/run", *argv[1:], "--out", str(out))
    except SystemExit as e:  # argparse's refusals
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_an_existing_output_is_kept_without_force(files, capsys) -> None:
    out = files / "kept.png"
    out.write_bytes(b"mine")
    assert _run(files, "edit", "--checkpoint", "ROOT/run", "--image", "ROOT/in.png", "--out", str(out)) == 2
    assert out.read_bytes() == b"mine"
    before = (files / "in.png").read_bytes()
    assert _run(files, "edit", "--checkpoint", "ROOT/run", "--image", "ROOT/in.png", "--out", "ROOT/in.png",
                "--force") == 2  # never an input, even with --force
    assert (files / "in.png").read_bytes() == before
