"""The optimisation policy: AdamW, the learning-rate warm-up and decay, and the EMA of the weights.

    lr(step)   = lr * (step + 1) / warmup                       during warm-up
               = lr * {1, or 0.5 (1 + cos(pi p))}               after, p = (step - warmup) / (total - warmup)
    theta_ema <- d_n theta_ema + (1 - d_n) theta        after the n-th update (n = step + 1), where
      power EMA (default):  d_n = (1 - 1/n)^(gamma + 1)    (Karras et al. 2024, "Analyzing and improving the
                            training dynamics of diffusion models", EDM2): theta_ema is the average of the past
                            weights under the profile p(t) ~ t^gamma, whose standard deviation is a fixed fraction
                            sigma_rel of the training so far, so every checkpoint (1,000 steps or 200,000) averages
                            the same share of its history; sigma_rel = sqrt(gamma+1) / ((gamma+2) sqrt(gamma+3))
      fixed decay:          d_n = min(ema_decay, n / (n + 9))  (TF's ExponentialMovingAverage warm-up)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ddpm.common.errors import UserError
from ddpm.config import RunConfig


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, skipped: torch.Tensor | None = None) -> None:
    """theta_ema <- decay * theta_ema + (1 - decay) * theta over all parameters (the UNet has no buffers).
    `skipped`: a 0-dim device tensor, > 0 when the optimiser skipped this step (fp16 overflow); then theta_ema stays
    as it is. It is read on the device (the weight of the lerp becomes 0), so the step needs no host sync."""
    ema_p = list(ema.parameters())
    model_p = [p.detach() for p in model.parameters()]
    if skipped is None:
        torch._foreach_lerp_(ema_p, model_p, 1.0 - decay)
        return
    weight = (skipped == 0).to(ema_p[0].dtype) * (1.0 - decay)  # 0-dim: 1 - decay, or 0 for a skipped step
    torch._foreach_lerp_(ema_p, model_p, [weight] * len(ema_p))


def ema_decay_at(step: int, decay: float) -> float:
    """Warm-up of a fixed EMA decay (as in TF's ExponentialMovingAverage with num_updates): min(decay, (1+n)/(10+n)),
    so early averages are not dominated by the random initialisation."""
    return min(decay, (1 + step) / (10 + step))


def power_ema_gamma(rel_std: float) -> float:
    """The exponent gamma of the power EMA whose profile t^gamma on [0, 1] has standard deviation `rel_std`:
    sigma(gamma) = sqrt(gamma+1) / ((gamma+2) sqrt(gamma+3)) falls from 0.2887 (gamma = 0) towards 0, so it is
    solved by bisection (EDM2's pairs: sigma 0.10 <-> gamma 6.94, 0.05 <-> 16.97)."""
    if not 0 < rel_std < 12 ** -0.5:
        raise ValueError(f"ema_rel_std must be in (0, 0.2886), got {rel_std}")
    lo, hi = 0.0, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2
        sigma = math.sqrt(mid + 1) / ((mid + 2) * math.sqrt(mid + 3))
        lo, hi = (mid, hi) if sigma > rel_std else (lo, mid)
    return (lo + hi) / 2


def ema_decay_for(step: int, ema_decay: float | None, rel_std: float) -> float:
    """The decay of the update after optimiser step `step` (0-based): the fixed `ema_decay` with its warm-up when
    one is set (runs before format 2), else the power EMA of relative width `rel_std`."""
    if ema_decay is not None:
        return ema_decay_at(step, ema_decay)
    return (1 - 1 / (step + 1)) ** (power_ema_gamma(rel_std) + 1)


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


def make_optimizer(model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """AdamW with its fused kernel (CPU and CUDA): on CPU 3x faster than the multi-tensor one (docs/benchmarks.md)."""
    return torch.optim.AdamW(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay, fused=True)

