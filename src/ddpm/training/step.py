"""One optimiser step: the micro-batches a rank trains on, when DDP synchronises the gradients, fp16 loss scaling,
gradient clipping, AdamW and the EMA.

Gradient accumulation. A step with B images per rank and micro-batch, R ranks and N micro-batches consumes the
B*R*N samples k = k0 .. k0 + B*R*N - 1 of the global stream. Rank r takes the contiguous B*N of them from r*B*N on,
in N micro-batches of B (rank-major), so each rank trains on exactly the samples it would take with batch B*N and
no accumulation. Micro-batch i's loss L_i (a mean over its B samples) is backpropagated as L_i / N:
    g_r = sum_i grad(L_i / N) = grad of the mean loss over rank r's B*N samples,
and DDP averages over ranks in the backward of the last micro-batch only (no_sync on the others):
    g = (1/R) sum_r g_r = grad of the mean loss over all B*R*N samples: the update of one batch N times larger.

fp16 loss scaling (Micikevicius et al. 2018, "Mixed precision training"). The loss is multiplied by a scale S
before backward, so small gradients do not flush to zero in fp16; the gradients are divided by S before clipping.
When any gradient is inf or nan the step is skipped: the weights, AdamW's moments and the EMA stay as they were
(the LR schedule and the EMA's step count still advance, as for any step) and S halves; after `growth_interval`
clean steps in a row S doubles. S and the count of clean steps are saved in every snapshot (state.grad_scaler).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ddpm.runtime.device import Precision
from ddpm.training.optim import ema_update

FP16_INIT_SCALE = 2.0**16  # S at the start of an fp16 run (torch's default)
FP16_GROWTH_INTERVAL = 2000  # clean steps in a row before S doubles (torch's default)


def micro_batches(rank: int, per_rank: int, accum: int) -> list[slice]:
    """The slices of the global batch (B*R*N samples in stream order) that rank `rank` trains on, one per
    micro-batch: its contiguous B*N samples from rank*B*N on, B = `per_rank` each."""
    start = rank * per_rank * accum
    return [slice(start + i * per_rank, start + (i + 1) * per_rank) for i in range(accum)]


def gradient_sync(net: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Wrap a micro-batch's forward and backward: DDP all-reduces the accumulated gradients in the backward only
    when `sync` (the last micro-batch); elsewhere, and for a plain module, gradients just add up in .grad."""
    if sync or not isinstance(net, DistributedDataParallel):
        return contextlib.nullcontext()
    return net.no_sync()


def make_scaler(precision: Precision, device: torch.device) -> torch.amp.GradScaler:
    """The loss scaler of an fp16 run; in fp32 and bf16 a disabled one, which passes the loss and the step through
    unchanged (scale() returns the loss itself, step() calls optimizer.step())."""
    return torch.amp.GradScaler(device.type, init_scale=FP16_INIT_SCALE, growth_interval=FP16_GROWTH_INTERVAL,
                                enabled=precision.name == "fp16")


def update_weights(model: nn.Module, ema: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   grad_clip: float, ema_decay: float) -> None:
    """After the micro-batches' backward: unscale the gradients (fp16), clip their norm to `grad_clip` (0: off),
    step AdamW, update the scale and the EMA. No host sync: whether fp16 gradients overflowed stays a device tensor,
    read on the device by the fused AdamW kernel (which skips its update) and by the EMA."""
    if grad_clip > 0:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones (a no-op unless fp16)
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
    scaler.step(optimizer)
    skipped = overflowed(scaler, optimizer)
    scaler.update()
    ema_update(ema, model, ema_decay, skipped)


def overflowed(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
    """A 0-dim tensor on the gradients' device, > 0 when the scaler found inf or nan gradients this step (and so
    skipped it); None when loss scaling is off. Read between scaler.step() and scaler.update(), which forgets it
    (GradScaler keeps it per optimiser and has no public getter)."""
    if not scaler.is_enabled():
        return None
    found = list(scaler._found_inf_per_device(optimizer).values())  # one per device holding parameters
    return found[0] if len(found) == 1 else torch.stack([f.to(found[0].device) for f in found]).sum()
