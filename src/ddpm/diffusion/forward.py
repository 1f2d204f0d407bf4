"""The forward process q(x_t | x_0) and the training objective (DDPM Algorithm 1), for a network that predicts
eps (DDPM) or v (Salimans & Ho 2022).

With alpha = sqrt(alpha_bar_t), sigma = sqrt(1 - alpha_bar_t) and x_t = alpha x_0 + sigma eps:
    v   = alpha eps - sigma x_0
    eps = alpha v + sigma x_t          x_0 = alpha x_t - sigma v
Both are affine in the network output for a fixed x_t, so classifier-free guidance mixes v or eps alike, and the
samplers, written for eps, take a v network through `EpsFromV`. Unlike x_0 = (x_t - sigma eps) / alpha, which
divides the network's error by alpha ~ 5e-5 at the last cosine step, x_0 from v stays well conditioned at high noise.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ddpm.diffusion.schedule import NoiseSchedule

EpsModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
from ddpm.config import PREDICTIONS, floor_needs_v, x0_weight_floor  # PREDICTIONS: what the network outputs, eps | v


def _per_sample(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Gather float64 schedule values at t (B,) and shape them (B, 1, 1, 1) in like's dtype and device."""
    return values.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps   (DDPM eq. 4). x0, noise: (B, C, H, W); t: (B,)."""
    return _per_sample(schedule.sqrt_alpha_bar, t, x0) * x0 + _per_sample(schedule.sqrt_one_minus_alpha_bar, t, x0) * noise


def q_jump(schedule: NoiseSchedule, x_s: torch.Tensor, s: int, t: int, noise: torch.Tensor) -> torch.Tensor:
    """x_t ~ q(x_t | x_s) = N(sqrt(ab_t / ab_s) x_s, (1 - ab_t / ab_s) I) for -1 <= s <= t at python-int steps (the
    noise added from s to t: RePaint's way back up; from s = -1, x_s = x_0, DDPM eq. 4). x_s, noise: (B, C, H, W)."""
    ratio = schedule.alpha_bar_of(t) / schedule.alpha_bar_of(s)
    return math.sqrt(ratio) * x_s + math.sqrt(1 - ratio) * noise


def v_target(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0, the v-prediction target. Shapes as q_sample."""
    return _per_sample(schedule.sqrt_alpha_bar, t, x0) * noise - _per_sample(schedule.sqrt_one_minus_alpha_bar, t, x0) * x0


def eps_from_v(schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """eps = sqrt(alpha_bar_t) v + sqrt(1 - alpha_bar_t) x_t. x_t, v: (B, C, H, W); t: (B,)."""
    return _per_sample(schedule.sqrt_alpha_bar, t, v) * v + _per_sample(schedule.sqrt_one_minus_alpha_bar, t, v) * x_t


class EpsFromV:
    """The EpsModel of a v-predicting network: what the samplers and guidance call."""

    def __init__(self, net: EpsModel, schedule: NoiseSchedule) -> None:
        self.net, self.schedule = net, schedule

    def __call__(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return eps_from_v(self.schedule, x.float(), t, self.net(x, t, c).float())


def as_eps_model(net: EpsModel, schedule: NoiseSchedule, prediction: str) -> EpsModel:
    """The network itself when it predicts eps, else wrapped to return eps."""
    if prediction == "eps":
        return net
    if prediction == "v":
        return EpsFromV(net, schedule)
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")


def sample_timesteps(batch: int, num_steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """t ~ Uniform{0, ..., T-1}: every step is trained, t = 0 included. Shape (B,), int64, on CPU."""
    return torch.randint(0, num_steps, (batch,), generator=generator)


def loss_weights(schedule: NoiseSchedule, t: torch.Tensor, weighting: str, gamma: float = 5.0,
                 prediction: str = "eps", floor: float = 0.0) -> torch.Tensor:
    """Per-sample weight on the MSE of the network's target, (B,) float32. Written as the weight w_x0 each puts on
    the x0 error: ||eps - eps_hat||^2 = SNR_t ||x0 - x0_hat||^2 and ||v - v_hat||^2 = (SNR_t + 1) ||x0 - x0_hat||^2,
    so a target's weight is w_x0 / SNR_t (eps) or w_x0 / (SNR_t + 1) (v).
        none           1 on the target: w_x0 = SNR_t (eps, DDPM's L_simple) or SNR_t + 1 (v)
        min-snr        w_x0 = clip(SNR_t, floor, gamma) (Hang et al. 2023 with floor 0): the easy low-noise steps
                       capped. Its weight is about SNR_t at high noise (2e-9 at the last step of the cosine
                       schedule): without a floor the network barely learns what to draw from pure noise, the
                       x0 a sampler's first steps commit to (where a text model places its colours: docs/text.md)
        trunc-min-snr  the same with a floor of at least 1 (Salimans & Ho 2022's truncation): the high-noise
                       steps weigh as much as a step at SNR 1 (a gamma below the floor acts as the floor)
    A floor needs v: on eps its weight would be floor / SNR_t at high noise, without bound."""
    if weighting == "none":
        return torch.ones(t.shape, dtype=torch.float32, device=t.device)
    if weighting not in ("min-snr", "trunc-min-snr"):
        raise ValueError(f"unknown loss weighting {weighting!r}; choose one of none, min-snr, trunc-min-snr")
    lo = x0_weight_floor(weighting, floor)
    if lo > 0 and prediction != "v":
        raise ValueError(floor_needs_v(weighting))
    snr = schedule.snr.to(t.device)[t]
    w_x0 = torch.clamp(snr, min=lo, max=max(gamma, lo))
    return (w_x0 / (snr if prediction == "eps" else snr + 1)).float()


def diffusion_loss(
    model: EpsModel,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    cond: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    weighting: str = "none",
    gamma: float = 5.0,
    prediction: str = "eps",
    floor: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """E || eps - eps_theta(x_t, t, c) ||^2 (DDPM eq. 14), or E || v - v_theta ||^2 when the network predicts v.
    Returns (scalar weighted loss, per-sample unweighted MSE (B,))."""
    xt = q_sample(schedule, x0, t, noise)
    out = model(xt, t, cond)
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
    target = noise if prediction == "eps" else v_target(schedule, x0.float(), t, noise.float())
    per_sample = (out.float() - target.float()).pow(2).flatten(1).mean(1)  # (B,)
    w = loss_weights(schedule, t, weighting, gamma, prediction, floor)
    return (w * per_sample).mean(), per_sample.detach()
