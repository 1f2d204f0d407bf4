"""Tests of the pictures (pictures/grid.py, pictures/noising.py) and the training-curve plot (training/metrics.py):
grid geometry and pixels, the noising frames' content, the files save_noising writes, and the training-curve plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from ddpm.data.dataset import load_dataset
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.pictures.grid import CAPTION_H, make_grid, panel_box, panel_scale
from ddpm.pictures.noising import noising_frames, noising_timesteps, save_noising
from ddpm.training.metrics import plot_training_curve

T = 1000


# ---------------------------------------------------------------------------------------------------------- grid


def distinct_images(n: int, c: int, h: int, w: int) -> torch.Tensor:
    """Images whose every pixel differs from its neighbours and from the other images' pixels (mod 256), none 0."""
    x = torch.arange(n * c * h * w).view(n, c, h, w) * 7 % 255 + 1
    return x.to(torch.uint8)


@pytest.mark.parametrize(
    "n, nrow, pad, scale, c",
    [(1, 1, 2, 1, 1), (6, 3, 2, 1, 1), (7, 3, 1, 1, 3), (2, 5, 0, 1, 1), (4, 2, 3, 2, 1), (10, 10, 2, 3, 3)],
)
def test_grid_size_arithmetic(n, nrow, pad, scale, c):
    h, w = 5, 4
    im = make_grid(distinct_images(n, c, h, w), nrow=nrow, pad=pad, scale=scale)
    cols, rows = min(nrow, n), math.ceil(n / nrow)
    assert im.size == (pad + cols * (w * scale + pad), pad + rows * (h * scale + pad))
    assert im.mode == ("L" if c == 1 else "RGB")


@pytest.mark.parametrize("c", [1, 3])
def test_grid_places_image_k_at_its_cell_and_pads_black(c):
    n, nrow, pad, h, w = 7, 3, 2, 5, 4
    x = distinct_images(n, c, h, w)
    arr = np.asarray(make_grid(x, nrow=nrow, pad=pad))
    arr = arr[..., None] if arr.ndim == 2 else arr  # (H, W, C)
    covered = np.zeros(arr.shape[:2], dtype=bool)
    for k in range(n):
        r, col = divmod(k, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        cell = arr[top : top + h, left : left + w]
        np.testing.assert_array_equal(cell, x[k].permute(1, 2, 0).numpy(), err_msg=f"image {k}")
        covered[top : top + h, left : left + w] = True
    assert (arr[~covered] == 0).all()  # borders and the empty 8th and 9th cells are black


def test_grid_scale_is_nearest_neighbour():
    x = distinct_images(3, 1, 4, 6)
    arr = np.asarray(make_grid(x, nrow=3, pad=1, scale=3))
    cell = arr[1 : 1 + 12, 1 + 2 * (18 + 1) :][:, :18]  # image 2
    np.testing.assert_array_equal(cell, x[2, 0].numpy().repeat(3, 0).repeat(3, 1))


def test_grid_labels_widen_left_and_keep_the_images():
    x = distinct_images(6, 1, 8, 8)
    plain = make_grid(x, nrow=3)
    labelled = make_grid(x, nrow=3, labels=["first", "second row"])
    margin = labelled.width - plain.width
    assert margin > 0 and labelled.height == plain.height and labelled.mode == "L"
    right = np.asarray(labelled)[:, margin:]
    np.testing.assert_array_equal(right, np.asarray(plain))  # the grid is shifted right, unchanged
    left = np.asarray(labelled)[:, :margin]
    assert left.max() > 100  # grey text is drawn in the margin
    assert make_grid(x, nrow=3, labels=["a", "much longer label"]).width > make_grid(x, nrow=3, labels=["a", "b"]).width


def test_grid_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        make_grid(torch.zeros(2, 1, 4, 4), nrow=2)
    with pytest.raises(ValueError, match="uint8"):
        make_grid(torch.zeros(2, 2, 4, 4, dtype=torch.uint8), nrow=2)
    with pytest.raises(ValueError, match="one label per row"):
        make_grid(torch.zeros(4, 1, 4, 4, dtype=torch.uint8), nrow=2, labels=["only one"])


# ------------------------------------------------------------------------------------------------- noising frames


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    """A real 28x28 silhouette with plenty of foreground: (1, 28, 28) uint8."""
    images = load_dataset("builtin:animal-shapes", 28, 1, "test").images[:50]
    fg = (images > 127).float().mean((1, 2, 3))
    return images[int(torch.argmin((fg - 0.3).abs()))]


@pytest.fixture(scope="module")
def schedules() -> list[NoiseSchedule]:
    return [NoiseSchedule.create("linear", T), NoiseSchedule.create("cosine", T)]


@pytest.fixture(scope="module")
def frames(image, schedules) -> list[Image.Image]:
    return noising_frames(image, schedules, num_frames=9, seed=0)


def panel(frame: Image.Image, index: int, image: torch.Tensor) -> np.ndarray:
    """Panel `index` of a noising frame, down-sampled back to the image's size (the upscaling is nearest)."""
    k = panel_scale(image.shape[-1])
    box = panel_box(index, image.shape[-2] * k, image.shape[-1] * k, top=CAPTION_H)
    return np.asarray(frame.crop(box), dtype=np.float64)[::k, ::k]


def corr(a: np.ndarray, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.ravel(), b.double().numpy().ravel())[0, 1])


def test_noising_timesteps_span_zero_to_last():
    assert noising_timesteps(1000, 5).tolist() == [0, 250, 500, 749, 999]  # round half to even at 749.5
    assert noising_timesteps(1000, 1).tolist() == [0]


def test_frames_have_one_upscaled_panel_per_schedule(frames, image):
    k = panel_scale(28)
    assert 100 <= 28 * k <= 160  # tiny images become visible
    assert len(frames) == 9 and len({f.size for f in frames}) == 1 and frames[0].mode == "L"
    assert frames[0].width == 2 + 2 * (28 * k + 2)
    # the panel is an exact nearest-neighbour upscaling: every k x k block is uniform
    p = np.asarray(frames[4].crop(panel_box(1, 28 * k, 28 * k, top=CAPTION_H)))
    assert (p == p[::k, ::k].repeat(k, 0).repeat(k, 1)).all()


def test_first_frame_is_the_image_for_both_schedules(frames, image):
    for s in range(2):
        p = panel(frames[0], s, image)
        assert corr(p, image) > 0.99
        assert np.abs(p - image[0].double().numpy()).mean() < 3  # within a few grey levels


def test_last_frame_is_pure_noise_for_both_schedules(frames, image):
    for s in range(2):
        p = panel(frames[-1], s, image)
        assert abs(corr(p, image)) < 0.1
        assert abs(p.mean() - 127.5) < 15 and p.std() > 60  # eps clipped to [-1, 1]: mean 0, std ~0.6
    # both panels show the same eps, so at t = T-1 (no signal left) they are nearly identical
    assert corr(panel(frames[-1], 0, image), torch.from_numpy(panel(frames[-1], 1, image))) > 0.95


def test_cosine_keeps_more_signal_than_linear_at_mid_t(frames, image):
    linear, cosine = (corr(panel(frames[4], s, image), image) for s in range(2))  # frame 4 of 9: t = 500
    assert cosine > linear + 0.2
    assert 0.05 < linear < 0.6 and 0.4 < cosine < 0.95


def test_frames_are_seeded(image, schedules, frames):
    again = noising_frames(image, schedules, num_frames=9, seed=0)
    other = noising_frames(image, schedules, num_frames=9, seed=1)
    assert np.array_equal(np.asarray(again[4]), np.asarray(frames[4]))
    assert not np.array_equal(np.asarray(other[4]), np.asarray(frames[4]))


def test_frames_need_schedules_with_the_same_T(image):
    with pytest.raises(ValueError, match="number of steps"):
        noising_frames(image, [NoiseSchedule.create("linear", 100), NoiseSchedule.create("cosine", 200)], 3)


def test_rgb_frames(image, schedules):
    f = noising_frames(image.repeat(3, 1, 1), schedules, num_frames=2)
    assert f[0].mode == "RGB"


# --------------------------------------------------------------------------------------------------- save_noising


def test_save_noising_writes_gif_strip_and_plot(tmp_path, image, schedules):
    out = save_noising(image, schedules, tmp_path / "sub" / "noise.gif", num_frames=12, fps=10, pause_s=2)
    assert out == {
        "gif": tmp_path / "sub" / "noise.gif",
        "strip": tmp_path / "sub" / "noise_strip.png",
        "alpha_bar": tmp_path / "sub" / "noise_alpha_bar.png",
    }
    with Image.open(out["gif"]) as gif:
        assert gif.format == "GIF" and gif.n_frames == 12 and gif.info.get("loop") == 0
        durations = [f.info["duration"] for f in ImageSequence.Iterator(gif)]
    assert durations[:-1] == [100] * 11 and durations[-1] == 2100  # the last frame is held for the pause
    with Image.open(out["strip"]) as strip:
        strip.load()
        k = panel_scale(28, 64)
        assert strip.width > 10 * (28 * k + 2) > strip.height > 2 * (28 * k + 2)  # 2 rows of 10 + labels
    with Image.open(out["alpha_bar"]) as plot:
        plot.load()
        assert plot.format == "PNG" and plot.width > 300 and plot.height > 200


# ------------------------------------------------------------------------------------------------ training curve


def write_metrics(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_training_curve_with_quarters(tmp_path):
    records = [
        {"step": s, "loss": 0.05 + math.exp(-s / 300), "lr": 1e-4, **{f"loss_q{i}": 0.1 / (i + 1) for i in range(4)}}
        for s in range(10, 2001, 10)
    ]
    out = plot_training_curve(write_metrics(tmp_path / "metrics.jsonl", records), tmp_path / "plots" / "curve.png")
    assert out == tmp_path / "plots" / "curve.png"
    with Image.open(out) as im:
        im.load()
        with_quarters = im.size
    out2 = plot_training_curve(
        write_metrics(tmp_path / "m2.jsonl", [{"step": r["step"], "loss": r["loss"]} for r in records]),
        tmp_path / "plain.png",
    )
    with Image.open(out2) as im:
        assert im.height < with_quarters[1]  # no second panel without quarter losses


def test_training_curve_with_one_record(tmp_path):
    out = plot_training_curve(write_metrics(tmp_path / "m.jsonl", [{"step": 1, "loss": 0.9}]), tmp_path / "c.png")
    with Image.open(out) as im:
        im.load()
        assert im.format == "PNG"


def test_training_curve_rejects_empty_or_bad_input(tmp_path):
    for text in ["", "\n\n"]:
        (tmp_path / "empty.jsonl").write_text(text)
        with pytest.raises(ValueError, match="empty"):
            plot_training_curve(tmp_path / "empty.jsonl", tmp_path / "x.png")
    (tmp_path / "bad.jsonl").write_text('{"step": 1, "loss": 0.5}\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        plot_training_curve(tmp_path / "bad.jsonl", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
