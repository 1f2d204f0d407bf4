"""Multi-process training under torchrun on CPU with gloo: real processes, each run bounded by a timeout.

The reference is one uninterrupted 2-process run; a run killed with kill -9 and restarted by torchrun, a run
stopped by SIGTERM and started again, and a 2-node localhost rendezvous must all end with its weights bit for bit.
So must a run with gradient accumulation (2 micro-batches a step) killed and restarted, against its own reference.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ddpm.training.snapshot import list_snapshots, load_snapshot, snapshot_path

pytestmark = pytest.mark.slow

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
STEPS, EVERY, PER_RANK = 40, 4, 4
TINY = ["--image-size", "16", "--base-channels", "8", "--channel-mults", "1,2", "--num-res-blocks", "1",
        "--attention-resolutions", "8", "--timesteps", "100", "--schedule", "cosine", "--batch-size", str(PER_RANK),
        "--lr", "2e-3", "--warmup", "2", "--log-every", "4", "--sample-every", "0", "--precision", "fp32",
        "--steps", str(STEPS), "--snapshot-every", str(EVERY), "--keep-snapshots", "20", "--device", "cpu", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TIMEOUT = 120
ACCUM_STEPS = 4 * EVERY  # the accumulating runs are shorter: each step is two micro-batches


def train_cmd(out: Path, nproc: int = 2, *torchrun_args: str, accum: int = 1) -> list[str]:
    launcher = [TORCHRUN, *(torchrun_args or ("--standalone",)), f"--nproc_per_node={nproc}"]
    if accum == 1:
        return [*launcher, "-m", "ddpm", "train", "--out", str(out), *TINY]
    return [*launcher, "-m", "ddpm", "train", "--out", str(out), *TINY, "--steps", str(ACCUM_STEPS),
            "--grad-accum", str(accum)]


class Launch:
    """A process started in its own session; on exit the whole session (torchrun and its workers) is killed, so a
    failed or timed-out test leaves no worker behind."""

    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)

    def __enter__(self) -> subprocess.Popen:
        return self.proc

    def __exit__(self, *exc: object) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def run(cmd: list[str]) -> tuple[int, str]:
    """(exit code, stdout and stderr together) of a bounded run."""
    with Launch(cmd) as proc:
        log, _ = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, log


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoint.safetensors"))


def assert_bitwise_equal(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def wait_for_snapshot(out: Path, step: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not snapshot_path(out, step).exists():
        assert proc.poll() is None, "the run ended before the snapshot appeared"
        assert time.monotonic() < deadline, "no snapshot in time"
        time.sleep(0.02)


def workers(launcher_pid: int) -> dict[int, int]:
    """{rank: pid} of the worker processes torchrun started (read from /proc)."""
    found = {}
    for task in Path(f"/proc/{launcher_pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            env = dict(e.split("=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in e)
            if "RANK" in env:
                found[int(env["RANK"])] = int(pid)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "reference"
    code, log = run(train_cmd(out))
    assert code == 0, log[-3000:]
    assert "global batch 8 = 4 per rank x 2 rank(s) (gloo)" in log
    return out


@pytest.fixture(scope="module")
def accumulating_reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "accumulating-reference"
    code, log = run(train_cmd(out, accum=2))
    assert code == 0, log[-3000:]
    assert "global batch 16 = 4 per rank x 2 rank(s) x 2 micro-batches (gloo)" in log
    final = load_snapshot(snapshot_path(out, ACCUM_STEPS))
    assert final.state["samples_seen"] == ACCUM_STEPS * 16 and final.state["grad_accum"] == 2
    return out


@pytest.mark.parametrize("accum", [1, 2])
def test_kill_9_of_a_worker_is_restarted_and_ends_bitwise_equal(accum, request, tmp_path):
    reference = request.getfixturevalue("reference" if accum == 1 else "accumulating_reference")
    out = tmp_path / "killed"
    with Launch(train_cmd(out, 2, "--standalone", "--max-restarts=1", accum=accum)) as proc:
        wait_for_snapshot(out, 2 * EVERY, proc)
        os.kill(workers(proc.pid)[1], signal.SIGKILL)
        log, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, log[-3000:]
    assert "resumed from" in log, log[-3000:]
    assert_bitwise_equal(reference, out)


def test_sigterm_writes_a_snapshot_exits_cleanly_and_the_next_start_resumes(reference, tmp_path):
    out = tmp_path / "preempted"
    with Launch(train_cmd(out)) as proc:
        wait_for_snapshot(out, EVERY, proc)
        proc.send_signal(signal.SIGTERM)  # to torchrun, as a scheduler would; it forwards it to the workers
        log, _ = proc.communicate(timeout=TIMEOUT)
    assert "stopped by SIGTERM at step" in log and "Traceback" not in log.split("stopped by SIGTERM")[0], log[-3000:]
    stopped_at = max(s for s, _ in list_snapshots(out))
    assert EVERY <= stopped_at < STEPS and not (out / "checkpoint.safetensors").exists()
    code, log = run(train_cmd(out))
    assert code == 0, log[-3000:]
    assert f"at step {stopped_at}" in log, log[-3000:]
    assert_bitwise_equal(reference, out)


def test_two_processes_resume_on_one_with_a_warning_and_exact_accounting(reference, tmp_path):
    out = tmp_path / "shrunk"
    (out / "snapshots").mkdir(parents=True)
    shutil.copy(snapshot_path(reference, 8), snapshot_path(out, 8))
    code, log = run([sys.executable, "-m", "ddpm", "train", "--out", str(out), *TINY])
    assert code == 0, log[-3000:]
    warning = [line for line in log.splitlines() if "written by 2 process" in line]
    assert len(warning) == 1 and "continuing with 1" in warning[0] and "64 samples seen" in warning[0]
    final = load_snapshot(snapshot_path(out, STEPS))
    seen = 8 * 2 * PER_RANK + (STEPS - 8) * PER_RANK
    assert final.state["samples_seen"] == seen and final.state["world_size"] == 1
    assert final.state["stream"] == {"epoch": 0, "offset": seen}  # each image once, none skipped or repeated
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["samples_seen"] == seen


def test_two_node_rendezvous_on_localhost(reference, tmp_path):
    out, port = tmp_path / "two-nodes", free_port()
    node = ("--nnodes=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=localhost:{port}", "--rdzv-id=ddpm-test")
    with Launch(train_cmd(out, 1, *node)) as first, Launch(train_cmd(out, 1, *node)) as second:
        procs = [first, second]
        logs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-2000:] for log in logs)
    assert any("x 2 rank(s) (gloo)" in log for log in logs)
    assert_bitwise_equal(reference, out)  # the same world size as the reference: the same weights
