"""Snapshots: atomic files with a checksum, found on restart, never unpickled; exact continuation in one process."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch
from helpers import tiny_config
from safetensors.torch import load_file

from ddpm.common.errors import UserError
from ddpm.config import RunConfig
from ddpm.launch import train_run
from ddpm.training.snapshot import (
    Snapshot,
    SnapshotError,
    SnapshotWarning,
    find_latest,
    list_snapshots,
    load_snapshot,
    save_snapshot,
    snapshot_path,
)


def fake_snapshot(step: int) -> Snapshot:
    tensors = {"model.w": torch.full((3, 4), float(step)), "rng.torch.0": torch.get_rng_state()}
    return Snapshot(RunConfig(), step, tensors, {"samples_seen": step * 8})


def test_round_trip_and_keep_last_k(tmp_path):
    for step in (2, 4, 6, 8):
        save_snapshot(tmp_path, fake_snapshot(step), keep=3)
    assert [s for s, _ in list_snapshots(tmp_path)] == [8, 6, 4]
    snap = find_latest(tmp_path)
    assert snap.step == 8 and snap.state == {"samples_seen": 64}
    assert torch.equal(snap.group("model")["w"], torch.full((3, 4), 8.0))
    assert not list((tmp_path / "snapshots").glob("*.tmp"))


def test_truncated_snapshot_falls_back_to_the_previous_one(tmp_path):
    save_snapshot(tmp_path, fake_snapshot(4), keep=3)
    newest = save_snapshot(tmp_path, fake_snapshot(8), keep=3)
    newest.write_bytes(newest.read_bytes()[:-20])
    with pytest.warns(SnapshotWarning) as caught:
        snap = find_latest(tmp_path)
    assert snap.step == 4
    message = str(caught[0].message)
    assert "snapshot-00000008" in message and "truncated or corrupt" in message and "\n" not in message


def test_flipped_byte_fails_the_checksum(tmp_path):
    path = save_snapshot(tmp_path, fake_snapshot(4), keep=3)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the tensor payload: safetensors alone would not notice
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="checksum"):
        load_snapshot(path)


class Hostile:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    save_snapshot(tmp_path, fake_snapshot(4), keep=3)
    evil = snapshot_path(tmp_path, 99)
    evil.write_bytes(pickle.dumps(Hostile(marker)))
    with pytest.raises(SnapshotError, match="pickle") as e:
        load_snapshot(evil)
    assert "\n" not in str(e.value)
    with pytest.warns(SnapshotWarning, match="never unpickles"):
        assert find_latest(tmp_path).step == 4  # auto-resume skips it
    torch_save = tmp_path / "also-evil.pt"
    torch.save({"x": Hostile(marker)}, torch_save)  # zip container with a pickle inside
    with pytest.raises(SnapshotError, match="pickle"):
        load_snapshot(torch_save)
    with pytest.raises(UserError, match="pickle"):
        train_run(tiny_config(steps=2), tmp_path / "run", progress=False, resume=evil)
    assert not marker.exists()


def test_resume_in_one_process_is_bitwise_exact(tmp_path):
    """Continuing from the step-3 snapshot of a 6-step run ends with the uninterrupted run's weights, bit for bit."""
    config = dict(snapshot_every=3, keep_snapshots=10)
    full = tmp_path / "full"
    train_run(tiny_config(steps=6, **config), full, progress=False)
    assert [s for s, _ in list_snapshots(full)] == [6, 3]
    resumed = tmp_path / "resumed"
    (resumed / "snapshots").mkdir(parents=True)
    shutil.copy(snapshot_path(full, 3), snapshot_path(resumed, 3))
    train_run(tiny_config(steps=6, **config), resumed, progress=False)
    a, b = load_file(str(full / "checkpoint.safetensors")), load_file(str(resumed / "checkpoint.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [6]  # the resumed run logged only the steps it ran (log_every 10, final step)
    final = load_snapshot(snapshot_path(resumed, 6))
    assert final.state["samples_seen"] == 6 * 16 and final.state["stream"] == {"epoch": 0, "offset": 96}


def test_finished_run_is_reported_and_incompatible_snapshot_refused(tmp_path, capsys):
    out = tmp_path / "run"
    train_run(tiny_config(steps=2), out, progress=False)
    again = train_run(tiny_config(steps=2), out, progress=False)  # the same command: nothing to do
    assert again.step == 2 and "already finished at step 2" in capsys.readouterr().err
    with pytest.raises(UserError, match="already holds a trained run"):
        train_run(tiny_config(steps=1), out, progress=False)
    with pytest.raises(UserError, match="already holds"):
        train_run(tiny_config(steps=2), out, progress=False, resume="never")
    wider = tiny_config(steps=4)
    wider.model.base_channels = 32
    with pytest.raises(SnapshotError, match=r"incompatible run \(model.base_channels 16 -> 32\)"):
        train_run(wider, out, progress=False)


@pytest.mark.slow
def test_kill_9_during_a_snapshot_write_keeps_the_previous_one(tmp_path):
    """A real process is killed while its snapshot is written (before the rename): the previous snapshot loads,
    the half-written temporary file is ignored, and the next save removes it."""
    script = textwrap.dedent(f"""
        import os, sys, time, torch
        import ddpm.training.snapshot as s
        from ddpm.config import RunConfig
        def snap(step):
            return s.Snapshot(RunConfig(), step, {{"model.w": torch.randn(256, 1024)}}, {{}})
        s.save_snapshot({str(tmp_path)!r}, snap(4), keep=3)
        def stall(fd):  # the bytes are on disk, the rename has not happened
            print("writing", flush=True)
            time.sleep(60)
        os.fsync = stall
        s.save_snapshot({str(tmp_path)!r}, snap(8), keep=3)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert [p.name for p in (tmp_path / "snapshots").glob(".*.tmp")]  # the interrupted write
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to report: the temporary file is not a snapshot
        assert find_latest(tmp_path).step == 4
    save_snapshot(tmp_path, fake_snapshot(12), keep=3)
    assert not list((tmp_path / "snapshots").glob(".*.tmp"))


def test_a_header_length_ending_in_0x80_is_not_mistaken_for_a_pickle(tmp_path):
    """safetensors starts with its header length (u64, little-endian); a low byte of 0x80 looks like pickle's
    protocol marker but is a valid snapshot."""
    for pad in range(300):
        snap = fake_snapshot(2)
        snap.state["pad"] = "x" * pad
        path = save_snapshot(tmp_path, snap, keep=1)
        if Path(path).read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("no padding gave a header length ending in 0x80")
    assert load_snapshot(path).state["pad"] == "x" * pad
