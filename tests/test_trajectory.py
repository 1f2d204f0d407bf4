"""The denoising trajectory: which steps are kept, batches joined, the GIF and x0 strip written, and
`ddpm sample --trajectory`."""

from __future__ import annotations

import pytest
import torch
from helpers import untrained_run
from PIL import Image, ImageSequence

from ddpm.cli import main
from ddpm.pictures.trajectory import Trajectory, save_trajectory


def feed(traj: Trajectory, batches: list[int], steps: int) -> None:
    """Call the recorder as the sampler would: every step of each batch; x_t = -x0_hat = t / 100."""
    for size in batches:
        for t in range(steps - 1, -1, -1):
            x = torch.full((size, 1, 4, 4), t / 100)
            traj(t, x, -x)


def test_keeps_evenly_spaced_steps_including_first_and_last():
    assert Trajectory(10, max_frames=4).kept == [0, 3, 6, 9]
    assert Trajectory(3, max_frames=40).kept == [0, 1, 2]
    assert Trajectory(1).kept == [0]
    with pytest.raises(ValueError):
        Trajectory(0)


def test_frames_join_batches_in_order():
    traj = Trajectory(5, max_frames=3)
    feed(traj, [2, 3], steps=5)
    frames = traj.frames()
    assert [(k, t) for k, t, _, _ in frames] == [(0, 4), (2, 2), (4, 0)]
    k, t, x_t, x0 = frames[1]
    assert x_t.shape == (5, 1, 4, 4) and x_t.dtype == torch.uint8
    assert int(x_t[0, 0, 0, 0]) == round((0.02 + 1) * 127.5) and int(x0[4, 0, 0, 0]) == round((1 - 0.02) * 127.5)


def test_empty_trajectory_says_so():
    with pytest.raises(ValueError, match="empty"):
        Trajectory(3).frames()


def test_save_writes_looping_gif_and_strip(tmp_path):
    traj = Trajectory(6, max_frames=4)
    feed(traj, [6], steps=6)
    paths = save_trajectory(traj, tmp_path / "t.gif", nrow=3, labels=["a", "b"], fps=10, pause_s=1)
    assert paths == {"trajectory": tmp_path / "t.gif", "x0 strip": tmp_path / "t_x0.png"}
    with Image.open(paths["trajectory"]) as gif:
        assert gif.n_frames == 4 and gif.info.get("loop") == 0
        durations = [f.info["duration"] for f in ImageSequence.Iterator(gif)]
    assert durations == [100, 100, 100, 1100]
    with Image.open(paths["x0 strip"]) as strip:
        strip.load()
        assert strip.width > strip.height  # 2 rows (one per label) x 4 kept steps


def test_sample_cli_writes_trajectory(tmp_path, capsys):
    run = untrained_run(tmp_path / "run")
    gif = tmp_path / "out" / "traj.gif"
    assert main(["sample", "--checkpoint", str(run), "cat", "dog", "-n", "2", "--steps", "5", "--out",
                 str(tmp_path / "g.png"), "--trajectory", str(gif), "--quiet"]) == 0
    with Image.open(gif) as im:
        assert im.n_frames == 5
    assert (tmp_path / "out" / "traj_x0.png").is_file()
    assert f"trajectory: {gif}" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(run), "--trajectory", str(tmp_path / "t.png"), "--quiet"]) == 2
    assert "give a .gif path" in capsys.readouterr().err
