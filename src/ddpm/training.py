"""The training loop (DDPM Algorithm 1) with AdamW, LR warm-up, gradient clipping, EMA and classifier-free
condition dropout. Single process here; the distributed issue extends this same loop."""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CHECKPOINT_NAME, save_checkpoint
from .config import RunConfig
from .batches import describe, make_stream
from .data import ImageData
from .diffusion import diffusion_loss, sample_timesteps
from .errors import UserError
from .guidance import drop_condition
from .network import UNet, count_parameters
from .sampler import PerSampleNoise, sample
from .schedule import NoiseSchedule


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
    history: list[dict] = field(default_factory=list)


def build_model(config: RunConfig, device: torch.device) -> UNet:
    try:
        return UNet(config.model).to(device)
    except ValueError as e:
        raise UserError(str(e)) from None


def make_optimizer(model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay, foreach=True)


def train(
    config: RunConfig,
    data: ImageData,
    out_dir: Path,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> TrainState:
    """Train a model described by `config` on `data`, writing config.json, metrics.jsonl, TensorBoard events and
    checkpoint.safetensors into `out_dir`. Returns the final state (model, EMA, optimiser, step)."""
    from tqdm.auto import tqdm

    device = torch.device(device)
    tc, dc = config.train, config.diffusion
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save(out_dir / "config.json")
    torch.manual_seed(tc.seed)  # weight initialisation
    schedule = NoiseSchedule.create(dc.schedule, dc.num_steps)
    model = build_model(config, device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = make_optimizer(model, config)
    precision = resolve_precision(tc.precision, device)
    state = TrainState(model, ema, optimizer)

    gen = torch.Generator().manual_seed(tc.seed)  # t, noise, dropout of the condition, flips
    stream = make_stream(data.labels, tc.batch_size, tc.seed, tc.balance)
    writer = _summary_writer(out_dir)
    metrics_file = open(out_dir / "metrics.jsonl", "w")
    quarter = torch.zeros(4, dtype=torch.float64)
    quarter_n = torch.zeros(4, dtype=torch.float64)
    loss_sum, seen, t_log = torch.zeros((), dtype=torch.float64), 0, time.perf_counter()

    bar = tqdm(total=tc.steps, disable=not progress, desc="train", unit="step", dynamic_ncols=True)
    bar.write(f"model: {count_parameters(model) / 1e6:.2f}M parameters, {precision}, {len(data)} images, "
              f"{len(data.class_names)} classes, batch {tc.batch_size}, {tc.steps} steps; {describe(stream)}")
    model.train()
    for step in range(tc.steps):
        idx = stream.next()
        x0 = data.batch(idx, gen, tc.hflip)  # (B, C, S, S) in [-1, 1]
        cond = drop_condition(data.labels[idx], model.null_class, dc.cond_drop_prob, gen)
        t = sample_timesteps(len(idx), schedule.num_steps, gen)
        noise = torch.randn(x0.shape, generator=gen)
        x0, cond, t, noise = (v.to(device, non_blocking=True) for v in (x0, cond, t, noise))

        for g in optimizer.param_groups:
            g["lr"] = tc.lr * lr_factor(step, tc.warmup_steps, tc.steps, tc.lr_schedule)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, per_sample = diffusion_loss(model, schedule, x0, cond, t, noise, dc.loss_weighting, dc.min_snr_gamma)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        ema_update(ema, model, ema_decay_at(step, tc.ema_decay))

        q = (t * 4 // schedule.num_steps).cpu()
        quarter.index_add_(0, q, per_sample.cpu().double())
        quarter_n.index_add_(0, q, torch.ones_like(q, dtype=torch.float64))
        loss_sum += loss.detach().cpu().double()
        seen += len(idx)
        state.step = step + 1
        if state.step % tc.log_every == 0 or state.step == tc.steps:  # the only host syncs of the loop
            n_steps = tc.log_every if state.step % tc.log_every == 0 else state.step % tc.log_every
            elapsed = time.perf_counter() - t_log
            record = {
                "step": state.step,
                "loss": float(loss_sum) / n_steps,
                "lr": optimizer.param_groups[0]["lr"],
                "images_per_s": seen / elapsed,
                "epoch": stream.epoch,
                **{f"loss_q{i}": float(quarter[i] / quarter_n[i]) for i in range(4) if quarter_n[i] > 0},
            }
            state.history.append(record)
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            if writer is not None:
                for k, v in record.items():
                    if k != "step":
                        writer.add_scalar(f"train/{k}", v, state.step)
            bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_s']:.0f}")
            quarter.zero_()
            quarter_n.zero_()
            loss_sum.zero_()
            seen, t_log = 0, time.perf_counter()
        bar.update(1)
        if writer is not None and tc.sample_every and state.step % tc.sample_every == 0:
            writer.add_image("samples/ema", preview_grid(ema, schedule, len(data.class_names), device), state.step)
        if tc.save_every and state.step % tc.save_every == 0 and state.step != tc.steps:
            save_checkpoint(out_dir / CHECKPOINT_NAME, config, model, ema, state.step)
    bar.close()
    metrics_file.close()
    save_checkpoint(out_dir / CHECKPOINT_NAME, config, model, ema, state.step)
    if writer is not None:
        writer.close()
    return state


@torch.no_grad()
def preview_grid(model: UNet, schedule: NoiseSchedule, num_classes: int, device: torch.device, per_class: int = 4) -> torch.Tensor:
    """A (C, H, W) float grid in [0, 1], one row per class: 20 DDIM steps at guidance 3, fixed seed."""
    from torchvision.utils import make_grid

    cond = torch.arange(num_classes).repeat_interleave(per_class)
    shape = (model.config.channels, model.config.image_size, model.config.image_size)
    x = sample(model, schedule, cond, shape, PerSampleNoise(0, range(len(cond))), sampler="ddim", steps=20,
               guidance=3.0, null_id=model.null_class, device=device)
    return make_grid((x.float().cpu() + 1) / 2, nrow=per_class)


def _summary_writer(out_dir: Path):
    """TensorBoard writer under out_dir/tb, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out_dir / "tb"))
