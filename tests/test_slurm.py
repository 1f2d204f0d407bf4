"""SLURM without SLURM: the launcher check under simulated environment variables, and the sbatch scripts of
examples/slurm/ run by bash with stand-ins for srun, scontrol and scancel (time limit -> snapshot -> requeue ->
resume)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import ddpm
from ddpm.cli import main
from ddpm.common.errors import UserError
from ddpm.runtime.distributed import check_launcher, init
from ddpm.training.snapshot import list_snapshots

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "29500"}
TORCHRUN_VARS = (*TORCHRUN, "LOCAL_WORLD_SIZE", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_USE_AGENT_STORE")
TINY = ["--image-size", "16", "--base-channels", "8", "--channel-mults", "1,2", "--num-res-blocks", "1",
        "--attention-resolutions", "8", "--timesteps", "50", "--batch-size", "4", "--quiet", "--precision", "fp32",
        "--sample-every", "0", "--device", "cpu"]


@pytest.fixture
def slurm_env(monkeypatch):
    """Set SLURM variables as srun would for one of its tasks; no torchrun variables unless given."""
    for name in [*TORCHRUN_VARS, *(k for k in os.environ if k.startswith("SLURM_"))]:
        monkeypatch.delenv(name, raising=False)

    def apply(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
    return apply


@pytest.mark.parametrize("environ", [
    {},  # no launcher: one process
    {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_NODELIST": "gpu[01-02]"},  # srun -n 1: one process
    {"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "1"},  # srun -n 1 inside an sbatch -n 8
    {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_NNODES": "2", **TORCHRUN},  # srun starting a torchrun per node
    {**TORCHRUN},  # torchrun alone
    {"SLURM_PROCID": "0", "SLURM_NTASKS": "many"},  # not a count: nothing to go by, so no refusal
])
def test_launches_that_pass(environ):
    check_launcher("train", environ)


@pytest.mark.parametrize("environ, nodes, per_node", [
    ({"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_NNODES": "2"}, 2, "4"),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}, 1, "4"),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_STEP_NUM_TASKS": "3", "SLURM_STEP_NUM_NODES": "2"}, 2,
     "GPUS_PER_NODE"),
])
def test_several_srun_tasks_without_torchrun_are_refused_with_the_launch_to_use(environ, nodes, per_node):
    with pytest.raises(UserError) as e:
        check_launcher("eval", environ)
    message = str(e.value)
    assert "\n" not in message and "but no torchrun" in message and "separate ddpm eval" in message
    assert f"srun --ntasks-per-node=1 torchrun --nnodes={nodes} --nproc_per_node={per_node} --rdzv-backend=c10d" in message
    assert "-m ddpm eval" in message and "examples/slurm/" in message


def test_the_library_refuses_too(slurm_env):
    slurm_env(SLURM_PROCID="1", SLURM_NTASKS="2")
    with pytest.raises(UserError, match="2 SLURM tasks but no torchrun"):
        init(torch.device("cpu"))


@pytest.mark.parametrize("command", ["train", "eval"])
def test_cli_refuses_in_one_line_before_writing_anything(command, slurm_env, tmp_path, capsys):
    slurm_env(SLURM_PROCID="0", SLURM_NTASKS="4", SLURM_NNODES="1", SLURM_JOB_ID="77")
    out = tmp_path / "out"
    args = ["--out", str(out), *TINY, "--steps", "2"] if command == "train" else [
        "--checkpoint", str(tmp_path / "missing"), "--out", str(out), "--quiet"]
    assert main([command, *args]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"ddpm {command}: error: 4 SLURM tasks but no torchrun"), captured.err
    assert "--nnodes=1 --nproc_per_node=4" in lines[0] and captured.out == ""
    assert not out.exists()


def test_one_slurm_task_is_a_single_process(slurm_env, tmp_path, capsys):
    slurm_env(SLURM_PROCID="0", SLURM_NTASKS="1", SLURM_NNODES="1", SLURM_JOB_ID="77", SLURM_NODELIST="gpu01")
    assert main(["train", "--out", str(tmp_path / "r"), *TINY, "--steps", "2"]) == 0
    assert "x 1 rank(s) (single process)" in capsys.readouterr().out
    assert (tmp_path / "r" / "checkpoint.safetensors").is_file()


# --- the sbatch scripts, with stand-ins for the SLURM commands they call --------------------------------------------

FAKE_SRUN = """#!/bin/bash
# srun: drop its options, start the command as the step's one task (with the variables srun gives a task)
while [[ "$1" == -* ]]; do shift; done
SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NTASKS=1 SLURM_STEP_NUM_TASKS=1 "$@" &
echo $! > "$FAKE_SLURM/task.pid"
wait $!
"""
FAKE_SCANCEL = """#!/bin/bash
# scancel --signal=SIG JOB: SIG to the tasks of the job's steps, never to the batch script
echo "scancel $*" >> "$FAKE_SLURM/calls"
kill -s "${1#--signal=}" "$(cat "$FAKE_SLURM/task.pid")"
"""
FAKE_SCONTROL = """#!/bin/bash
if [ "$1 $2" = "show hostnames" ]; then echo localhost; exit 0; fi
task=$(cat "$FAKE_SLURM/task.pid")
if [ "$1" = requeue ] && kill -0 "$task" 2>/dev/null; then  # SLURM ends a requeued job's tasks at once
    echo "scontrol $* while the task runs: killed" >> "$FAKE_SLURM/calls"
    kill -KILL "$task"
    exit 0
fi
echo "scontrol $*" >> "$FAKE_SLURM/calls"
"""
STEPS, EVERY = 120, 20


def fake_slurm(tmp_path: Path) -> dict[str, str]:
    fake = tmp_path / "fake-slurm"
    (fake / "bin").mkdir(parents=True)
    for name, text in (("srun", FAKE_SRUN), ("scancel", FAKE_SCANCEL), ("scontrol", FAKE_SCONTROL)):
        (fake / "bin" / name).write_text(text)
        (fake / "bin" / name).chmod(0o755)
    path = os.pathsep.join([str(fake / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in TORCHRUN_VARS}
    src = str(Path(ddpm.__file__).resolve().parents[1])  # the ddpm under test, wherever the workers start
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return {**env, "PATH": path, "FAKE_SLURM": str(fake), "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "localhost",
            "SLURM_JOB_NUM_NODES": "1", "SLURM_CPUS_PER_TASK": "2", "GPUS_PER_NODE": "2", "OMP_NUM_THREADS": "1",
            "DATA": "builtin:animal-shapes", "OUT": str(tmp_path / "run"), "PYTHONUNBUFFERED": "1"}


def sbatch(script: str, env: dict[str, str]) -> subprocess.Popen:
    """The script as the batch step runs it (sbatch's #SBATCH lines are comments to bash), in its own session."""
    args = [*TINY, "--steps", str(STEPS), "--snapshot-every", str(EVERY), "--log-every", str(EVERY)]
    return subprocess.Popen(["bash", str(ROOT / "examples" / "slurm" / script), *args], env=env, text=True,
                            cwd=Path(env["OUT"]).parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    try:
        return proc.communicate(timeout=timeout)[0]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the session: fake srun, torchrun, workers
        except ProcessLookupError:
            pass


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train-one-node.sbatch", "train-multi-node.sbatch"])
def test_time_limit_snapshots_requeues_and_the_next_start_resumes(script, tmp_path):
    env = fake_slurm(tmp_path)
    run, calls = Path(env["OUT"]), Path(env["FAKE_SLURM"]) / "calls"
    proc = sbatch(script, env)
    deadline = time.monotonic() + 300
    while not list_snapshots(run):
        assert proc.poll() is None, finish(proc)[-3000:]
        assert time.monotonic() < deadline, "no snapshot in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@180 sends before the time limit
    log = finish(proc)
    assert "time limit near" in log and "stopped by SIGTERM at step" in log, log[-3000:]
    assert calls.read_text().splitlines() == ["scancel --signal=TERM 4242", "scontrol requeue 4242"]
    stopped_at = max(step for step, _ in list_snapshots(run))
    assert EVERY <= stopped_at < STEPS and not (run / "checkpoint.safetensors").exists()

    log = finish(sbatch(script, env))  # the requeued job starts the same script again
    assert f"at step {stopped_at}" in log and "x 2 rank(s) (gloo)" in log, log[-3000:]
    assert (run / "checkpoint.safetensors").is_file() and max(step for step, _ in list_snapshots(run)) == STEPS
    assert calls.read_text().count("requeue") == 1  # a run that ends by itself is not requeued
