"""The training state and its snapshots: what is captured (weights, EMA, optimiser, fp16 loss scaler, counters,
data position and every rank's RNG states) and how it is restored on any number of ranks. The file format is
training/snapshot.py. Snapshots are taken between optimiser steps only, never between micro-batches."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ddpm.common.seeding import mixed_seed
from ddpm.config import RunConfig
from ddpm.network.unet import UNet
from ddpm.runtime.distributed import World, gather_objects
from ddpm.training.snapshot import Snapshot, SnapshotError, flatten_optimizer, save_snapshot, unflatten_optimizer


@dataclass
class TrainState:
    model: UNet
    ema: UNet
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler = field(default_factory=lambda: torch.amp.GradScaler("cpu", enabled=False))  # fp16
    step: int = 0
    samples_seen: int = 0  # training images used so far, summed over ranks (the global sample counter k)
    history: list[dict] = field(default_factory=list)


SAMPLE_STREAM, RANK_STREAM = 0, 1  # stream ids under (seed, 0x7452, ...): per-sample draws, per-rank global RNG


def seed_rank(seed: int, rank: int, step: int) -> None:
    """The global torch RNG (used only by dropout layers) differs per rank; weights are initialised before this."""
    torch.manual_seed(mixed_seed(seed, 0x7452, RANK_STREAM, rank, step))


def rank_rng_state(device: torch.device) -> dict:
    """Every RNG state of this process: torch CPU (and CUDA) as uint8 tensors, python and numpy as JSON."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": [version, list(mt), gauss],
             "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rank_rng(snap: Snapshot, rank: int, device: torch.device) -> None:
    version, mt, gauss = snap.state["rng"][rank]["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = snap.state["rng"][rank]["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(snap.tensors[f"rng.torch.{rank}"])
    if device.type == "cuda" and f"rng.cuda.{rank}" in snap.tensors:
        torch.cuda.set_rng_state(snap.tensors[f"rng.cuda.{rank}"], device)


def ema_fingerprint(ema: nn.Module) -> list[float]:
    """Per-parameter float64 sums: equal on every rank when the EMAs are equal (one host sync)."""
    return torch.stack([p.detach().double().sum() for p in ema.parameters()]).cpu().tolist()


def capture(state: TrainState, config: RunConfig, stream: object, world: World, device: torch.device) -> Snapshot | None:
    """Collective: every rank sends its RNG states and EMA fingerprint; rank 0 returns the Snapshot, others None.
    Raises when the EMA weights differ between ranks (they must not: same gradients, same updates)."""
    per_rank = gather_objects(world, (rank_rng_state(device), ema_fingerprint(state.ema)))
    if any(fp != per_rank[0][1] for _, fp in per_rank):
        raise RuntimeError(f"EMA weights differ between ranks at step {state.step}; this is a bug, please report it")
    if not world.is_main:
        return None
    tensors = {f"model.{k}": v for k, v in state.model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in state.ema.state_dict().items()})
    optim_tensors, optim_json = flatten_optimizer(state.optimizer.state_dict())
    tensors.update(optim_tensors)
    rng_json = []
    for r, (rng, _) in enumerate(per_rank):
        tensors[f"rng.torch.{r}"] = rng["torch"]
        if "cuda" in rng:
            tensors[f"rng.cuda.{r}"] = rng["cuda"]
        rng_json.append({"python": rng["python"], "numpy": rng["numpy"]})
    tc = config.train
    meta = {
        "samples_seen": state.samples_seen, "world_size": world.world_size, "batch_size_per_rank": tc.batch_size,
        "grad_accum": tc.grad_accum, "global_batch": tc.batch_size * world.world_size * tc.grad_accum,
        "stream": stream.state(), "optimizer": optim_json,  # type: ignore[attr-defined]
        "lr": state.optimizer.param_groups[0]["lr"], "rng": rng_json, "grad_scaler": scaler_state(state),
    }
    return Snapshot(config, state.step, tensors, meta)


def scaler_state(state: TrainState) -> dict | None:
    """The fp16 GradScaler's state_dict (scale, growth and backoff factors, growth interval, the count of clean
    steps: Python numbers, exact in JSON), or None in fp32 and bf16, which need no loss scaling."""
    if not state.scaler.is_enabled():
        return None
    return state.scaler.state_dict()


def write_snapshot(state: TrainState, config: RunConfig, stream: object, world: World, device: torch.device,
                   out_dir: Path) -> Path | None:
    """Collective; rank 0 writes RUN/snapshots/snapshot-<step>.safetensors and returns its path."""
    snap = capture(state, config, stream, world, device)
    return None if snap is None else save_snapshot(out_dir, snap, config.train.keep_snapshots)


def restore(state: TrainState, snap: Snapshot, world: World, device: torch.device, seed: int) -> None:
    """Load weights, EMA, optimiser, fp16 loss scaler, counters and this rank's RNG states from `snap` (any world
    size)."""
    try:
        state.model.load_state_dict(snap.group("model"))
        state.ema.load_state_dict(snap.group("ema"))
        state.optimizer.load_state_dict(unflatten_optimizer(snap))
        saved_scaler = snap.state.get("grad_scaler")
        if state.scaler.is_enabled() and saved_scaler:  # fp16 continuing fp16; else a fresh scale, as at step 0
            state.scaler.load_state_dict(saved_scaler)
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SnapshotError(f"snapshot {snap.path} does not fit this model ({first})") from None
    state.step, state.samples_seen = snap.step, int(snap.state["samples_seen"])
    if world.rank < len(snap.state["rng"]):
        restore_rank_rng(snap, world.rank, device)
    else:  # a rank that did not exist when the snapshot was written
        seed_rank(seed, world.rank, snap.step)

