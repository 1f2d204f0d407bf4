"""The training loop (DDPM Algorithm 1) with AdamW, LR warm-up, gradient clipping, EMA and classifier-free
condition dropout; one code path for one process or many under torchrun (DDP), with snapshots that let a
restarted run continue exactly (see snapshot.py, distributed.py and the README's distributed section)."""

from __future__ import annotations

import copy
import json
import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ddpm.training.checkpoint import CHECKPOINT_NAME, save_checkpoint
from ddpm.text.bank import CaptionBank
from ddpm.config import RunConfig
from ddpm.data.batches import describe, make_stream
from ddpm.data.dataset import ImageData
from ddpm.runtime.distributed import World, any_rank, barrier, gather_objects, sum_over_ranks
from ddpm.diffusion.forward import as_eps_model, diffusion_loss, sample_timesteps
from ddpm.common.errors import UserError
from ddpm.diffusion.guidance import drop_condition
from ddpm.network.unet import UNet, count_parameters
from ddpm.diffusion.sampler import PerSampleNoise, sample
from ddpm.common.seeding import mixed_seed
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.training.snapshot import Snapshot, SnapshotError, flatten_optimizer, save_snapshot, unflatten_optimizer


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast pays on CUDA with bf16 support and on CPUs with native bf16 (AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if precision not in ("fp32", "bf16"):
        raise UserError(f"unknown precision {precision!r}; choose auto, fp32 or bf16")
    return precision


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """theta_ema <- decay * theta_ema + (1 - decay) * theta over all parameters (the UNet has no buffers)."""
    ema_p = list(ema.parameters())
    model_p = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_p, model_p, 1.0 - decay)


def ema_decay_at(step: int, decay: float) -> float:
    """Warm-up of the EMA (as in TF's ExponentialMovingAverage with num_updates): min(decay, (1+n)/(10+n)),
    so early averages are not dominated by the random initialisation."""
    return min(decay, (1 + step) / (10 + step))


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Linear warm-up over `warmup` steps, then constant or cosine decay to 0 at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    raise UserError(f"unknown lr schedule {schedule!r}; choose constant or cosine")


@dataclass
class TrainState:
    model: UNet
    ema: UNet
    optimizer: torch.optim.Optimizer
    step: int = 0
    samples_seen: int = 0  # training images used so far, summed over ranks (the global sample counter k)
    history: list[dict] = field(default_factory=list)


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT stopped training after a snapshot was written; the same command continues the run."""

    def __init__(self, signum: int, step: int, path: Path | None) -> None:
        where = f"snapshot {path}" if path else "snapshot written by rank 0"
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; {where}; "
                         "run the same command to continue")
        self.signum = signum


class StopSignals:
    """Within the block SIGTERM and SIGINT only record `signum`; the loop stops cleanly at the end of its step."""

    def __enter__(self) -> "StopSignals":
        self.signum: int | None = None
        self._saved: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._saved[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._saved.items():
            signal.signal(s, handler)  # type: ignore[arg-type]


_SAMPLES, _RANKS = 0, 1  # stream ids under (seed, 0x7452, ...): per-sample draws, per-rank global RNG


def draw_batch(data: ImageData, idx: torch.Tensor, keys: list[int], seed: int, hflip: bool, null_class: int,
               cond_drop: float, num_steps: int, text: CaptionBank | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample k of the run (k counts images over all steps and ranks) takes its crop, flip, caption (text mode),
    condition dropout, t and eps from its own generator seeded by (seed, k): what a sample sees does not depend on
    the batch size, the number of ranks, or restarts. Returns x0 (B, C, S, S) in [-1, 1], cond ((B,) class ids,
    or (B, 384) caption embeddings with `text`), t (B,), eps (B, C, S, S)."""
    xs, conds, ts, noises = [], [], [], []
    for j, k in enumerate(keys):
        g = torch.Generator().manual_seed(mixed_seed(seed, 0x7452, _SAMPLES, k))
        x = data.batch(idx[j : j + 1], g, hflip)  # (1, C, S, S)
        xs.append(x)
        c = data.labels[idx[j : j + 1]] if text is None else text.pick(int(idx[j]), g)
        conds.append(drop_condition(c, null_class, cond_drop, g))
        ts.append(sample_timesteps(1, num_steps, g))
        noises.append(torch.randn(x.shape, generator=g))
    return torch.cat(xs), torch.cat(conds), torch.cat(ts), torch.cat(noises)


def seed_rank(seed: int, rank: int, step: int) -> None:
    """The global torch RNG (used only by dropout layers) differs per rank; weights are initialised before this."""
    torch.manual_seed(mixed_seed(seed, 0x7452, _RANKS, rank, step))


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
        "global_batch": tc.batch_size * world.world_size, "stream": stream.state(),  # type: ignore[attr-defined]
        "optimizer": optim_json, "lr": state.optimizer.param_groups[0]["lr"], "rng": rng_json,
        "grad_scaler": None,  # fp32 and bf16 need no loss scaling; an fp16 GradScaler's state_dict would go here
    }
    return Snapshot(config, state.step, tensors, meta)


def write_snapshot(state: TrainState, config: RunConfig, stream: object, world: World, device: torch.device,
                   out_dir: Path) -> Path | None:
    """Collective; rank 0 writes RUN/snapshots/snapshot-<step>.safetensors and returns its path."""
    snap = capture(state, config, stream, world, device)
    return None if snap is None else save_snapshot(out_dir, snap, config.train.keep_snapshots)


def restore(state: TrainState, snap: Snapshot, world: World, device: torch.device, seed: int) -> None:
    """Load weights, EMA, optimiser, counters and this rank's RNG states from `snap` (any world size)."""
    try:
        state.model.load_state_dict(snap.group("model"))
        state.ema.load_state_dict(snap.group("ema"))
        state.optimizer.load_state_dict(unflatten_optimizer(snap))
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SnapshotError(f"snapshot {snap.path} does not fit this model ({first})") from None
    state.step, state.samples_seen = snap.step, int(snap.state["samples_seen"])
    if world.rank < len(snap.state["rng"]):
        restore_rank_rng(snap, world.rank, device)
    else:  # a rank that did not exist when the snapshot was written
        seed_rank(seed, world.rank, snap.step)


def build_model(config: RunConfig, device: torch.device) -> UNet:
    try:
        return UNet(config.model).to(device)
    except ValueError as e:
        raise UserError(str(e)) from None


def make_optimizer(model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """AdamW with its fused kernel (CPU and CUDA): on CPU 3x faster than the multi-tensor one (docs/benchmarks.md)."""
    return torch.optim.AdamW(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay, fused=True)


def configure_device(device: torch.device) -> None:
    """On CUDA: TF32 for fp32 matmuls and convolutions (bf16 autocast covers most of the step; TF32 the rest) and
    cuDNN autotuning (every step has the same shapes). Nothing to do on CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def to_device(batch: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Host tensors to `device`; to CUDA from pinned memory without blocking (the copy overlaps the host's work)."""
    if device.type != "cuda":
        return tuple(v.to(device) for v in batch)
    return tuple(v.pin_memory().to(device, non_blocking=True) for v in batch)


class MetricsLog:
    """Loss statistics between log points, summed over ranks when logged (a collective: every rank calls `emit`
    at the same steps); rank 0 alone writes metrics.jsonl and TensorBoard. On resume, records after the snapshot
    (from the lost interval) are dropped, so each step is logged once."""

    def __init__(self, out_dir: Path, world: World, start_step: int, device: torch.device) -> None:
        self.world = world
        # accumulated on the training device: adding to them never waits for the device (no host sync per step)
        self.quarter = torch.zeros(4, dtype=torch.float64, device=device)
        self.quarter_n = torch.zeros(4, dtype=torch.float64, device=device)
        self.loss_sum = torch.zeros(1, dtype=torch.float64, device=device)
        self.seen, self.t_log = 0, time.perf_counter()
        self.file, self.writer = None, None
        if world.is_main:
            path = out_dir / "metrics.jsonl"
            kept = [line for line in (path.read_text().splitlines() if start_step and path.exists() else [])
                    if line.strip() and json.loads(line)["step"] <= start_step]
            self.file = open(path, "w")
            self.file.writelines(line + "\n" for line in kept)
            self.writer = _summary_writer(out_dir, purge_step=start_step + 1 if start_step else None)

    def add(self, loss: torch.Tensor, per_sample: torch.Tensor, t: torch.Tensor, num_steps: int) -> None:
        q = t * 4 // num_steps
        self.quarter.index_add_(0, q, per_sample.detach().double())
        self.quarter_n.index_add_(0, q, torch.ones_like(q, dtype=torch.float64))
        self.loss_sum += loss.detach().double()
        self.seen += len(t)

    def emit(self, step: int, n_steps: int, lr: float, epoch: int, samples_seen: int) -> dict:
        """The record of the last `n_steps` steps over all ranks (loss: mean of the ranks' batch means)."""
        loss_sum, quarter, quarter_n = (acc.cpu() for acc in (self.loss_sum, self.quarter, self.quarter_n))
        sum_over_ranks(self.world, loss_sum, quarter, quarter_n)
        elapsed = time.perf_counter() - self.t_log
        w = self.world.world_size
        record = {
            "step": step, "loss": float(loss_sum) / (n_steps * w), "lr": lr,
            "images_per_s": self.seen * w / elapsed, "epoch": epoch, "samples_seen": samples_seen,
            **{f"loss_q{i}": float(quarter[i] / quarter_n[i]) for i in range(4) if quarter_n[i] > 0},
        }
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        if self.writer is not None:
            for k, v in record.items():
                if k != "step":
                    self.writer.add_scalar(f"train/{k}", v, step)
        for acc in (self.quarter, self.quarter_n, self.loss_sum):
            acc.zero_()
        self.seen, self.t_log = 0, time.perf_counter()
        return record

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()


def train(
    config: RunConfig,
    data: ImageData,
    out_dir: Path,
    device: torch.device | str = "cpu",
    progress: bool = True,
    world: World | None = None,
    resume: Snapshot | None = None,
    text: CaptionBank | None = None,
) -> TrainState:
    """Train a model described by `config` on `data`, writing config.json, metrics.jsonl, TensorBoard events,
    snapshots and checkpoint.safetensors into `out_dir`; continue from `resume` when given. Under torchrun every
    rank calls this with its `world`: each step, rank r trains on its slice of the global batch of
    batch_size x world_size images (DDP averages the gradients); rank 0 alone writes files.
    `text`: the captions and their embeddings of a text-conditioned model (config.model.cond == "text"); their
    unique captions are written to out_dir/captions.json (what `ddpm sample` compares prompts with).
    Raises TrainingInterrupted after a snapshot when SIGTERM or SIGINT arrives. Returns the final state."""
    from tqdm.auto import tqdm

    world = world or World()
    device = torch.device(device)
    tc, dc = config.train, config.diffusion
    per_rank, ranks = tc.batch_size, world.world_size
    if world.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        config.save(out_dir / "config.json")
        if text is not None:
            (out_dir / "captions.json").write_text(json.dumps(text.texts, ensure_ascii=False, indent=0) + "\n")
    configure_device(device)
    torch.manual_seed(tc.seed)  # weight initialisation, the same on every rank
    schedule = NoiseSchedule.create(dc.schedule, dc.num_steps)
    model = build_model(config, device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    state = TrainState(model, ema, make_optimizer(model, config))
    precision = resolve_precision(tc.precision, device)
    position = {"epoch": 0, "offset": 0}
    if resume is not None:
        restore(state, resume, world, device, tc.seed)
        position = resume.state["stream"]
    else:
        seed_rank(tc.seed, world.rank, 0)
    net = _wrap(model, world, device)
    stream = make_stream(data.labels, per_rank * ranks, tc.seed, tc.balance, **position)  # the global stream
    metrics = MetricsLog(out_dir, world, state.step, device)

    bar = tqdm(total=tc.steps, initial=state.step, disable=not (progress and world.is_main), desc="train",
               unit="step", dynamic_ncols=True)
    if world.is_main:
        bar.write(f"model: {count_parameters(model) / 1e6:.2f}M parameters, {precision}, {len(data)} images, "
                  f"{len(data.class_names)} classes, {tc.steps} steps, global batch {per_rank * ranks} = {per_rank} "
                  f"per rank x {ranks} rank(s) ({world.backend or 'single process'}); {describe(stream)}")
        if resume is not None:
            bar.write(f"resumed from {resume.path} at step {state.step} ({state.samples_seen:,} samples seen)")
    model.train()
    last_snapshot: Path | None = None
    with StopSignals() as stop:
        for step in range(state.step, tc.steps):
            mine = slice(world.rank * per_rank, (world.rank + 1) * per_rank)
            idx = stream.next()[mine]  # this rank's shard of the global batch
            keys = list(range(state.samples_seen, state.samples_seen + per_rank * ranks))[mine]
            batch = draw_batch(data, idx, keys, tc.seed, tc.hflip, model.null_class, dc.cond_drop_prob, dc.num_steps,
                               text)
            x0, cond, t, noise = to_device(batch, device)

            for g in state.optimizer.param_groups:
                g["lr"] = tc.lr * lr_factor(step, tc.warmup_steps, tc.steps, tc.lr_schedule)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss, per_sample = diffusion_loss(net, schedule, x0, cond, t, noise, dc.loss_weighting, dc.min_snr_gamma,
                                                 dc.prediction)
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP: gradients averaged over ranks here
            if tc.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip, foreach=True)
            state.optimizer.step()
            ema_update(ema, model, ema_decay_at(step, tc.ema_decay))

            metrics.add(loss, per_sample, t, schedule.num_steps)
            state.samples_seen += per_rank * ranks
            state.step = step + 1
            if state.step % tc.log_every == 0 or state.step == tc.steps:  # the only host syncs of the loop
                n_steps = tc.log_every if state.step % tc.log_every == 0 else state.step % tc.log_every
                record = metrics.emit(state.step, min(n_steps, state.step - (resume.step if resume else 0)),
                                      state.optimizer.param_groups[0]["lr"], stream.epoch, state.samples_seen)
                state.history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_s']:.0f}")
            bar.update(1)
            if world.is_main and metrics.writer is not None and tc.sample_every and state.step % tc.sample_every == 0:
                preview = text.preview() if text is not None else torch.arange(len(data.class_names))
                metrics.writer.add_image("samples/ema", preview_grid(ema, schedule, preview, device, dc.prediction), state.step)
            if world.is_main and tc.save_every and state.step % tc.save_every == 0 and state.step != tc.steps:
                save_checkpoint(out_dir / CHECKPOINT_NAME, config, model, ema, state.step)
            stopping = any_rank(world, stop.signum is not None) and state.step < tc.steps
            if stopping or (tc.snapshot_every and state.step % tc.snapshot_every == 0 and state.step < tc.steps):
                last_snapshot = write_snapshot(state, config, stream, world, device, out_dir)
            if stopping:
                barrier(world)  # no rank exits before rank 0 has written the snapshot
                bar.close()
                metrics.close()
                raise TrainingInterrupted(stop.signum or signal.SIGTERM, state.step, last_snapshot)
    bar.close()
    metrics.close()
    if world.is_main:  # the checkpoint first: a final snapshot means "finished, checkpoint written"
        save_checkpoint(out_dir / CHECKPOINT_NAME, config, model, ema, state.step)
    write_snapshot(state, config, stream, world, device, out_dir)
    barrier(world)
    return state


def _wrap(model: UNet, world: World, device: torch.device) -> nn.Module:
    """DistributedDataParallel across ranks (it broadcasts rank 0's weights once); the plain model alone."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


@torch.no_grad()
def preview_grid(model: UNet, schedule: NoiseSchedule, rows: torch.Tensor, device: torch.device, prediction: str = "eps",
                 per_class: int = 4) -> torch.Tensor:
    """A (C, H, W) float grid in [0, 1], one row per condition in `rows` (class ids (R,) or embeddings (R, D)):
    20 DDIM steps at guidance 3, fixed seed."""
    from torchvision.utils import make_grid

    cond = rows.repeat_interleave(per_class, dim=0)
    shape = (model.config.channels, model.config.image_size, model.config.image_size)
    x = sample(as_eps_model(model, schedule, prediction), schedule, cond, shape, PerSampleNoise(0, range(len(cond))),
               sampler="ddim", steps=20, guidance=3.0, null_id=model.null_class, device=device)
    return make_grid((x.float().cpu() + 1) / 2, nrow=per_class)


def _summary_writer(out_dir: Path, purge_step: int | None = None):
    """TensorBoard writer under out_dir/tb (events from purge_step on are dropped), or None without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out_dir / "tb"), purge_step=purge_step)
