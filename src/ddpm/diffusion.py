"""The forward process q(x_t | x_0) and the epsilon-prediction training objective (DDPM Algorithm 1)."""

from __future__ import annotations

from typing import Callable

import torch

from .schedule import NoiseSchedule

EpsModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _per_sample(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Gather float64 schedule values at t (B,) and shape them (B, 1, 1, 1) in like's dtype and device."""
    return values.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps   (DDPM eq. 4). x0, noise: (B, C, H, W); t: (B,)."""
    return _per_sample(schedule.sqrt_alpha_bar, t, x0) * x0 + _per_sample(schedule.sqrt_one_minus_alpha_bar, t, x0) * noise


def sample_timesteps(batch: int, num_steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """t ~ Uniform{0, ..., T-1}: every step is trained, t = 0 included. Shape (B,), int64, on CPU."""
    return torch.randint(0, num_steps, (batch,), generator=generator)


def loss_weights(schedule: NoiseSchedule, t: torch.Tensor, weighting: str, gamma: float = 5.0) -> torch.Tensor:
    """Per-sample weight on the eps-MSE. `none`: 1 (DDPM's L_simple). `min-snr`: min(SNR_t, gamma) / SNR_t
    (Hang et al. 2023, eq. for eps-prediction), which down-weights the easy low-noise steps. Returns (B,) float32."""
    if weighting == "none":
        return torch.ones(t.shape, dtype=torch.float32, device=t.device)
    if weighting == "min-snr":
        snr = schedule.snr.to(t.device)[t]
        return (torch.clamp(snr, max=gamma) / snr).float()
    raise ValueError(f"unknown loss weighting {weighting!r}; choose none or min-snr")


def diffusion_loss(
    model: EpsModel,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    cond: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    weighting: str = "none",
    gamma: float = 5.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """E || eps - eps_theta(x_t, t, c) ||^2 (DDPM eq. 14). Returns (scalar loss, per-sample unweighted MSE (B,))."""
    xt = q_sample(schedule, x0, t, noise)
    eps = model(xt, t, cond)
    per_sample = (eps.float() - noise.float()).pow(2).flatten(1).mean(1)  # (B,)
    w = loss_weights(schedule, t, weighting, gamma)
    return (w * per_sample).mean(), per_sample.detach()
