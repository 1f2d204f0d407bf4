"""The training loop (DDPM Algorithm 1): per-sample seeded batches with classifier-free condition dropout, the
loss, AdamW with gradient clipping, the EMA; one code path for one process or many under torchrun (DDP), with or
without gradient accumulation. The optimisation policy is optim.py, one optimiser step's mechanics (micro-batches,
fp16 loss scaling) step.py, the snapshot capture and restore state.py, the logging metrics.py, what rank 0 writes
to watch the run (sample PNGs, evaluations, best.safetensors, index.html) watch.py; a SIGTERM or SIGINT stops at the
end of a step after a snapshot, so the same command continues the run exactly."""

from __future__ import annotations

import copy
import json
import signal
import threading
import time
from pathlib import Path

import torch
from torch import nn

from ddpm.common.errors import UserError
from ddpm.common.files import write_text_atomic
from ddpm.common.seeding import mixed_seed
from ddpm.config import CONFIG_NAME, RunConfig
from ddpm.data.batches import describe, make_stream
from ddpm.data.dataset import ImageData
from ddpm.diffusion.forward import diffusion_loss, sample_timesteps
from ddpm.diffusion.guidance import drop_condition
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.network.unet import UNet, count_parameters
from ddpm.runtime.device import autocast, configure_device, cpu_threads, resolve_precision, to_device
from ddpm.runtime.distributed import World, any_rank, barrier
from ddpm.text.bank import CaptionBank
from ddpm.training.checkpoint import CHECKPOINT_NAME, save_checkpoint
from ddpm.training.metrics import MetricsLog, preview_grid
from ddpm.training.optim import ema_decay_for, lr_factor, make_optimizer
from ddpm.training.snapshot import Snapshot
from ddpm.training.state import SAMPLE_STREAM, TrainState, restore, seed_rank, write_snapshot
from ddpm.training.step import gradient_sync, make_scaler, micro_batches, update_weights
from ddpm.training.watch import BEST_NAME, Evaluator, refresh_page, write_sample_png


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


def draw_batch(data: ImageData, idx: torch.Tensor, keys: list[int], seed: int, hflip: bool, null_id: int,
               cond_drop: float, num_steps: int, text: CaptionBank | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample k of the run (k counts images over all steps and ranks) takes its crop, flip, caption (text mode),
    condition dropout, t and eps from its own generator seeded by (seed, k): what a sample sees does not depend on
    the batch size, the number of ranks, or restarts. Returns x0 (B, C, S, S) in [-1, 1], cond ((B,) class ids,
    or text conditions (B, 384) / (B, 1 + text_tokens, 384) with `text`), t (B,), eps (B, C, S, S)."""
    xs, conds, ts, noises = [], [], [], []
    for j, k in enumerate(keys):
        g = torch.Generator().manual_seed(mixed_seed(seed, 0x7452, SAMPLE_STREAM, k))
        x = data.batch(idx[j : j + 1], g, hflip)  # (1, C, S, S)
        xs.append(x)
        c = data.labels[idx[j : j + 1]] if text is None else text.pick(int(idx[j]), g)
        conds.append(drop_condition(c, null_id, cond_drop, g))
        ts.append(sample_timesteps(1, num_steps, g))
        noises.append(torch.randn(x.shape, generator=g))
    return torch.cat(xs), torch.cat(conds), torch.cat(ts), torch.cat(noises)


def train(
    config: RunConfig,
    data: ImageData,
    out_dir: Path,
    device: torch.device | str = "cpu",
    progress: bool = True,
    world: World | None = None,
    resume: Snapshot | None = None,
    text: CaptionBank | None = None,
    evaluator: Evaluator | None = None,
) -> TrainState:
    """Train a model described by `config` on `data`, writing config.json, metrics.jsonl, TensorBoard events,
    snapshots and checkpoint.safetensors into `out_dir`; continue from `resume` when given. Under torchrun every
    rank calls this with its `world`: each optimiser step uses a global batch of batch_size x world_size x
    grad_accum images, rank r training on its slice in grad_accum micro-batches (DDP averages the gradients, see
    step.py); rank 0 alone writes files. Torch uses config.train.threads CPU threads meanwhile (0: its default).
    `text`: the captions and their embeddings of a text-conditioned model (config.model.cond == "text"); their
    unique captions are written to out_dir/captions.json (what `ddpm sample` compares prompts with).
    `evaluator`: measures the EMA model every config.train.eval_every steps on rank 0 (watch.py).
    Raises TrainingInterrupted after a snapshot when SIGTERM or SIGINT arrives. Returns the final state."""
    with cpu_threads(config.train.threads) as threads:
        return _train(config, data, out_dir, torch.device(device), progress, world or World(), resume, text, threads,
                      evaluator)


def _train(config: RunConfig, data: ImageData, out_dir: Path, device: torch.device, progress: bool, world: World,
           resume: Snapshot | None, text: CaptionBank | None, threads: int, evaluator: Evaluator | None) -> TrainState:
    from tqdm.auto import tqdm

    tc, dc = config.train, config.diffusion
    per_rank, ranks, accum = tc.batch_size, world.world_size, tc.grad_accum
    global_batch = per_rank * ranks * accum
    if world.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        config.save(out_dir / CONFIG_NAME)
        if text is not None:
            write_text_atomic(out_dir / "captions.json", json.dumps(text.texts, ensure_ascii=False, indent=0) + "\n")
    configure_device(device)
    torch.manual_seed(tc.seed)  # weight initialisation, the same on every rank
    schedule = NoiseSchedule.create(dc.schedule, dc.num_steps)
    model = build_model(config, device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    precision = resolve_precision(tc.precision, device)
    state = TrainState(model, ema, make_optimizer(model, config), make_scaler(precision, device))
    position = {"epoch": 0, "offset": 0}
    if resume is not None:
        restore(state, resume, world, device, tc.seed)
        position = resume.state["stream"]
    else:
        seed_rank(tc.seed, world.rank, 0)
    net = _wrap(model, world, device)
    stream = make_stream(data.labels, global_batch, tc.seed, tc.balance, **position)  # the global stream
    metrics = MetricsLog(out_dir, world, state.step, device, {"global_batch": global_batch, "threads": threads},
                         tc.log, config.to_dict())

    bar = tqdm(total=tc.steps, initial=state.step, disable=not (progress and world.is_main), desc="train",
               unit="step", dynamic_ncols=True)
    if world.is_main:
        micro = f" x {accum} micro-batches" if accum > 1 else ""
        bar.write(f"model: {count_parameters(model) / 1e6:.2f}M parameters, {precision}, {threads} CPU thread(s), "
                  f"{len(data)} images, {len(data.class_names)} classes, {tc.steps} steps, global batch "
                  f"{global_batch} = {per_rank} per rank x {ranks} rank(s){micro} "
                  f"({world.backend or 'single process'}); {describe(stream)}")
        if resume is not None:
            bar.write(f"resumed from {resume.path} at step {state.step} ({state.samples_seen:,} samples seen)")
    model.train()
    last_snapshot: Path | None = None
    t_trained = time.perf_counter()  # training time since the last evaluation starts here
    with StopSignals() as stop:
        for step in range(state.step, tc.steps):
            idx = stream.next()  # (B*R*N,) the global batch, samples k = samples_seen, samples_seen + 1, ...
            for g in state.optimizer.param_groups:
                g["lr"] = tc.lr * lr_factor(step, tc.warmup(), tc.steps, tc.lr_schedule)
            state.optimizer.zero_grad(set_to_none=True)
            parts = micro_batches(world.rank, per_rank, accum)  # this rank's B*N samples, N micro-batches of B
            for i, part in enumerate(parts):
                keys = list(range(state.samples_seen + part.start, state.samples_seen + part.stop))
                batch = draw_batch(data, idx[part], keys, tc.seed, tc.hflip, model.null_id, dc.cond_drop_prob,
                                   dc.num_steps, text)
                x0, cond, t, noise = to_device(batch, device)
                with gradient_sync(net, i == len(parts) - 1):  # DDP: gradients averaged over ranks on the last
                    with autocast(device, precision):
                        loss, per_sample = diffusion_loss(net, schedule, x0, cond, t, noise, dc.loss_weighting,
                                                         dc.min_snr_gamma, dc.prediction, dc.min_snr_floor)
                    share = loss / accum  # L_i / N: the N micro-batches' gradients add up to the global mean's
                    state.scaler.scale(share).backward()
                metrics.add(share, per_sample, t, schedule.num_steps)
            update_weights(model, ema, state.optimizer, state.scaler, tc.grad_clip,
                           ema_decay_for(step, tc.ema_decay, tc.ema_rel_std))
            state.samples_seen += global_batch
            state.step = step + 1
            if state.step % tc.log_every == 0 or state.step == tc.steps:  # the only host syncs of the loop
                n_steps = tc.log_every if state.step % tc.log_every == 0 else state.step % tc.log_every
                record = metrics.emit(state.step, min(n_steps, state.step - (resume.step if resume else 0)),
                                      state.optimizer.param_groups[0]["lr"], stream.epoch, state.samples_seen)
                state.history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_s']:.0f}")
            bar.update(1)
            if world.is_main and tc.sample_every and state.step % tc.sample_every == 0:
                preview = text.preview() if text is not None else torch.arange(len(data.class_names))
                with _own_rng(device):
                    grid = preview_grid(ema, schedule, preview, device, dc.prediction)
                write_sample_png(grid, out_dir, state.step)
                metrics.log_image("samples/ema", grid, state.step)
            if world.is_main and evaluator is not None and tc.eval_every and state.step % tc.eval_every == 0:
                with _own_rng(device):
                    point = evaluator(state.step, ema, config, time.perf_counter() - t_trained)
                for note in point.notes:
                    bar.write(note)
                best = metrics.log_eval(state.step, point)
                if best:
                    save_checkpoint(out_dir / BEST_NAME, config, model, ema, state.step)
                bar.write(f"eval at step {state.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in point.values.items())
                          + f" ({point.seconds:.0f} s)" + (f"; the best {point.metric} so far: {BEST_NAME}" if best else ""))
                t_trained = time.perf_counter()  # the evaluation's time is not training time
            if world.is_main and tc.save_every and state.step % tc.save_every == 0 and state.step != tc.steps:
                save_checkpoint(out_dir / CHECKPOINT_NAME, config, model, ema, state.step)
                refresh_page(out_dir)
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
        refresh_page(out_dir)
    write_snapshot(state, config, stream, world, device, out_dir)
    barrier(world)
    return state


def _own_rng(device: torch.device):
    """Watching the run (grids, evaluations) draws from its own copy of the random state: training's stream of
    draws is the same with or without it, so resume stays exact."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def build_model(config: RunConfig, device: torch.device) -> UNet:
    try:
        return UNet(config.model).to(device)
    except ValueError as e:
        raise UserError(str(e)) from None



def _wrap(model: UNet, world: World, device: torch.device) -> nn.Module:
    """DistributedDataParallel across ranks (it broadcasts rank 0's weights once); the plain model alone."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


