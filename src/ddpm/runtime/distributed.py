"""Rank, world size, process-group set-up and the few collectives training needs, read from the torchrun
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT). One code path for 1 or N processes: without
those variables this is a world of one and every collective is a no-op.

Backend: nccl when the device is CUDA, gloo on CPU (so the tests run multi-process on a laptop). Small control
messages (stop flags, RNG states, fingerprints) always go through a gloo group on CPU tensors, so they never
wait on, or synchronise, a GPU stream.

SLURM: torchrun is the one launcher. `srun python -m ddpm train` with several tasks (SLURM_PROCID and
SLURM_NTASKS > 1 set, no RANK/WORLD_SIZE) is refused in one line that shows the launch to use instead, one
torchrun per node (`check_launcher`); one task (SLURM_NTASKS=1) is simply a world of one. We refuse rather than
read SLURM's variables because (1) torchrun's --max-restarts restarts a dead worker inside the allocation, losing
at most one snapshot interval, where a bare srun step just fails; (2) the rendezvous host and port are chosen once,
in the sbatch script, where a user can read and change them, not inside ddpm from a parse of SLURM's compressed
host list and a port it would have to guess; (3) under srun's --gpus-per-task binding a task may see only its own
GPU, so cuda:SLURM_LOCALID would be the wrong device; (4) one launcher is one code path, the one the tests run
(kill -9 restarts, SIGTERM, a two-node rendezvous). examples/slurm/ has the sbatch scripts.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ddpm.common.errors import UserError
from ddpm.common.parse import ascii_integer


@dataclass
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""  # "" when not distributed
    control: Any = None  # a gloo process group for CPU-side messages (None when not distributed)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, writes pictures, checkpoints and snapshots."""
        return self.rank == 0


def launched_by_torchrun(environ: Mapping[str, str] = os.environ) -> bool:
    return "RANK" in environ and "WORLD_SIZE" in environ


def check_launcher(command: str, environ: Mapping[str, str] = os.environ) -> None:
    """A UserError when SLURM started several tasks of `ddpm COMMAND` without torchrun: each would be a separate
    run of world size 1 writing the same --out (see the module docstring for why this is refused, not supported).
    One SLURM task, torchrun (with or without SLURM) and no launcher at all pass."""
    if launched_by_torchrun(environ) or "SLURM_PROCID" not in environ:
        return
    # srun sets SLURM_STEP_NUM_TASKS for the tasks it starts; SLURM_NTASKS alone is the allocation's (sbatch -n)
    tasks = _slurm_count(environ, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")
    if tasks is None or tasks <= 1:
        return
    nodes = _slurm_count(environ, "SLURM_STEP_NUM_NODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES") or 1
    per_node = str(tasks // nodes) if tasks % nodes == 0 else "GPUS_PER_NODE"
    raise UserError(
        f"{tasks} SLURM tasks but no torchrun (SLURM_PROCID set, no RANK/WORLD_SIZE): each task would be a separate "
        f"ddpm {command} writing the same --out; start one torchrun per node instead: "
        f"srun --ntasks-per-node=1 torchrun --nnodes={nodes} --nproc_per_node={per_node} --rdzv-backend=c10d "
        '--rdzv-endpoint="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)":29500 '
        f'--rdzv-id="$SLURM_JOB_ID" --max-restarts=3 -m ddpm {command} ... (examples/slurm/ has sbatch scripts)')


def _slurm_count(environ: Mapping[str, str], *names: str) -> int | None:
    """The first of these SLURM variables that holds a whole number (None when none does)."""
    for name in names:
        value = ascii_integer(environ.get(name, ""))
        if value is not None:
            return value
    return None


def env_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun), before any process group exists."""
    return int(os.environ.get("RANK", 0))


def init(device: torch.device, command: str = "train") -> tuple[World, torch.device]:
    """Join the process group described by the environment; returns the world and this rank's device
    (`cuda` becomes `cuda:LOCAL_RANK`). A world of one never creates a process group. `command` (train, eval)
    names what to relaunch in check_launcher's error."""
    check_launcher(command)
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return World(), device
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank if device.index is None else device.index)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        timeout = datetime.timedelta(minutes=30)
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=timeout, store=_attempt_store(world_size, timeout), rank=rank,
                                world_size=world_size, **kwargs)
    control = dist.new_group(backend="gloo") if backend != "gloo" else dist.group.WORLD
    return World(rank, world_size, local_rank, backend, control), device


def _attempt_store(world_size: int, timeout: datetime.timedelta) -> dist.Store:
    """The key-value store the ranks meet in, with keys private to this restart attempt. Under torchrun the
    agent's store outlives a restart (`--max-restarts`), and torch 2.14's env:// init reuses its keys, so the
    restarted ranks would read the dead ones' addresses and hang; a prefix per TORCHELASTIC_RESTART_COUNT avoids it.
    Outside torchrun's agent store, rank 0 hosts the store at MASTER_ADDR:MASTER_PORT as usual."""
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(host, port, world_size, is_master=not agent and int(os.environ["RANK"]) == 0,
                          timeout=timeout, **({} if agent else {"multi_tenant": True}))
    return dist.PrefixStore(f"ddpm/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier(group=world.control)


def any_rank(world: World, flag: bool) -> bool:
    """True on every rank when `flag` is true on any (e.g. a SIGTERM seen by one rank stops all at one step)."""
    if not world.distributed:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=world.control)
    return bool(t.item())


def sum_over_ranks(world: World, *tensors: torch.Tensor) -> None:
    """In-place sum over ranks of CPU tensors (logged statistics)."""
    if world.distributed:
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=world.control)


def gather_objects(world: World, obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank. Only for our own processes' JSON-like values and CPU
    tensors: this pickles between ranks of one job, never anything read from disk."""
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.world_size
    dist.all_gather_object(out, obj, group=world.control)
    return out


def gather_to_main(world: World, obj: Any) -> list[Any] | None:
    """[obj of rank 0, obj of rank 1, ...] on rank 0, None on the others (e.g. each rank's share of generated
    images and their features). The same caveat as gather_objects: our own processes' values only."""
    if not world.distributed:
        return [obj]
    out: list[Any] | None = [None] * world.world_size if world.is_main else None
    dist.gather_object(obj, out, dst=0, group=world.control)
    return out


def broadcast_object(world: World, obj: Any) -> Any:
    """Rank 0's `obj` on every rank (e.g. which snapshot to resume from, so all ranks load the same file)."""
    if not world.distributed:
        return obj
    box = [obj if world.is_main else None]
    dist.broadcast_object_list(box, src=0, group=world.control)
    return box[0]
