"""common.files: atomic writes (old or new file, never a part) and the safetensors reader that never unpickles."""

import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch

from ddpm.common.files import (
    PickleRefused,
    UnreadableFile,
    atomic_path,
    read_safetensors,
    remove_stale_temps,
    temp_path,
    write_bytes_atomic,
    write_safetensors,
    write_text_atomic,
)


class Marker:
    """Unpickling it creates a file: proof that something was (or was not) unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def test_an_exception_inside_the_block_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    final = tmp_path / "f.bin"
    write_bytes_atomic(final, b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"new, half written")
            raise RuntimeError("boom")
    assert final.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_the_final_name_changes_only_when_the_block_ends(tmp_path):
    final = tmp_path / "f.txt"
    write_text_atomic(final, "first")
    with atomic_path(final) as tmp:
        tmp.write_text("second")
        assert final.read_text() == "first"  # the new content is complete before it gets the name
    assert final.read_text() == "second" and not tmp.exists()
    write_text_atomic(final, "third ünïcode")
    assert final.read_text(encoding="utf-8") == "third ünïcode"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_the_temp_file_is_hidden_in_the_same_folder_and_unique_to_the_process(tmp_path):
    final = tmp_path / "sub" / "f.bin"
    final.parent.mkdir()
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".") and str(os.getpid()) in tmp.name
        assert tmp == temp_path(final)
        tmp.write_bytes(b"x")
    assert final.read_bytes() == b"x"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name a file descriptor")
def test_the_file_and_the_folder_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    write_bytes_atomic(tmp_path / "f.bin", b"x")
    assert synced[0].endswith(".tmp") and synced[-1] == str(tmp_path)


def test_stale_temps_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".snapshot-1.safetensors.{dead.pid}.tmp"
    live = tmp_path / f".snapshot-2.safetensors.{os.getpid()}.tmp"
    other = tmp_path / f".config.json.{dead.pid}.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    assert remove_stale_temps(tmp_path, "snapshot-*.safetensors") == [stale]
    assert not stale.exists() and live.exists() and other.exists()


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    tensors = {"a": torch.randn(3, 4).t(), "b": torch.arange(7, dtype=torch.int64), "c": torch.ones(2, dtype=torch.bfloat16)}
    path = tmp_path / "t.safetensors"
    write_safetensors(path, tensors, {"format": "test", "step": "3"})
    loaded, metadata = read_safetensors(path)
    assert metadata == {"format": "test", "step": "3"}
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], tensors[k]) and loaded[k].dtype == tensors[k].dtype for k in tensors)
    write_safetensors(path, {"a": torch.zeros(1)})
    assert read_safetensors(path)[1] == {}


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_a_pickle_is_refused_and_nothing_runs(tmp_path, how):
    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.safetensors"
    if how == "pickle":
        path.write_bytes(pickle.dumps(Marker(marker)))
    else:
        torch.save({"x": Marker(marker)}, path)
    with pytest.raises(PickleRefused) as e:
        read_safetensors(path)
    assert "never unpickles" in e.value.reason and "\n" not in e.value.reason
    assert not marker.exists()


def test_a_header_length_ending_in_0x80_is_not_taken_for_a_pickle(tmp_path):
    path = tmp_path / "t.safetensors"
    for pad in range(300):
        write_safetensors(path, {"a": torch.zeros(2)}, {"pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("no padding gave a header length ending in 0x80")
    assert read_safetensors(path)[1]["pad"] == "x" * pad


def test_a_truncated_or_missing_file_is_unreadable_with_a_one_line_reason(tmp_path):
    path = tmp_path / "t.safetensors"
    write_safetensors(path, {"a": torch.randn(100)}, {"k": "v"})
    path.write_bytes(path.read_bytes()[:-17])
    with pytest.raises(UnreadableFile) as e:
        read_safetensors(path)
    assert type(e.value) is UnreadableFile and not e.value.io_error
    assert e.value.reason and "\n" not in e.value.reason
    with pytest.raises(UnreadableFile) as e:
        read_safetensors(tmp_path / "missing.safetensors")
    assert e.value.io_error and e.value.reason == "No such file or directory"
