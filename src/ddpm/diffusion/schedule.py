"""Noise schedules and the closed forms derived from them.

Notation (Ho et al. 2020, "DDPM"; Nichol & Dhariwal 2021, "Improved DDPM").
Index t runs over 0..T-1 and stands for the paper's step t+1:

    beta_t                              variance added at step t
    alpha_t     = 1 - beta_t
    alpha_bar_t = prod_{s<=t} alpha_s   so q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)   (DDPM eq. 4)

The posterior q(x_{t-1} | x_t, x_0) = N(mu_tilde, beta_tilde I) has (DDPM eqs. 6-7)

    mu_tilde   = [beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t)] x_0
               + [(1 - alpha_bar_{t-1}) sqrt(alpha_t) / (1 - alpha_bar_t)] x_t
    beta_tilde = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)

with alpha_bar_{-1} = 1, so at t = 0 the posterior is a point mass at x_0.

Everything is computed once in float64 and cast by the caller: the schedule is data, not weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

ScheduleName = Literal["linear", "cosine"]
SCHEDULES: tuple[str, ...] = ("linear", "cosine")

LINEAR_BETA_START = 1e-4
LINEAR_BETA_END = 0.02
COSINE_S = 0.008
COSINE_MAX_BETA = 0.999


def linear_betas(num_steps: int) -> torch.Tensor:
    """Ho et al. 2020: beta_t evenly spaced from 1e-4 to 0.02 over T steps. Shape (T,), float64."""
    return torch.linspace(LINEAR_BETA_START, LINEAR_BETA_END, num_steps, dtype=torch.float64)


def cosine_alpha_bar(u: torch.Tensor, s: float = COSINE_S) -> torch.Tensor:
    """Nichol & Dhariwal 2021 eq. 17: alpha_bar(u) = f(u) / f(0), f(u) = cos^2(((u + s) / (1 + s)) pi / 2), u = t/T in [0, 1]."""
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    return f / f0


def cosine_betas(num_steps: int, s: float = COSINE_S, max_beta: float = COSINE_MAX_BETA) -> torch.Tensor:
    """beta_t = min(1 - alpha_bar((t+1)/T) / alpha_bar(t/T), 0.999) for t = 0..T-1. Shape (T,), float64."""
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps  # (T+1,)
    ab = cosine_alpha_bar(u, s)
    return torch.clamp(1 - ab[1:] / ab[:-1], max=max_beta)


@dataclass(frozen=True)
class NoiseSchedule:
    """All per-step coefficients of a discrete Gaussian diffusion, each of shape (T,) in float64."""

    name: str
    betas: torch.Tensor

    @classmethod
    def create(cls, name: str, num_steps: int = 1000) -> "NoiseSchedule":
        """Build the `linear` or `cosine` schedule with T = num_steps."""
        if num_steps < 2:
            raise ValueError(f"num_steps must be at least 2, got {num_steps}")
        if name == "linear":
            betas = linear_betas(num_steps)
        elif name == "cosine":
            betas = cosine_betas(num_steps)
        else:
            raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
        return cls(name=name, betas=betas)

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]

    @property
    def alphas(self) -> torch.Tensor:
        return 1.0 - self.betas

    @property
    def alpha_bar(self) -> torch.Tensor:
        """alpha_bar_t = prod_{s<=t} (1 - beta_s)."""
        return torch.cumprod(self.alphas, dim=0)

    @property
    def alpha_bar_prev(self) -> torch.Tensor:
        """alpha_bar_{t-1}, with alpha_bar_{-1} = 1."""
        return torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])

    @property
    def sqrt_alpha_bar(self) -> torch.Tensor:
        return self.alpha_bar.sqrt()

    @property
    def sqrt_one_minus_alpha_bar(self) -> torch.Tensor:
        return (1.0 - self.alpha_bar).sqrt()

    @property
    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t)."""
        ab = self.alpha_bar
        return ab / (1.0 - ab)

    @property
    def posterior_variance(self) -> torch.Tensor:
        """beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t); zero at t = 0."""
        return self.betas * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)

    @property
    def posterior_mean_coef_x0(self) -> torch.Tensor:
        """Coefficient of x_0 in mu_tilde: beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t)."""
        return self.betas * self.alpha_bar_prev.sqrt() / (1.0 - self.alpha_bar)

    @property
    def posterior_mean_coef_xt(self) -> torch.Tensor:
        """Coefficient of x_t in mu_tilde: (1 - alpha_bar_{t-1}) sqrt(alpha_t) / (1 - alpha_bar_t)."""
        return (1.0 - self.alpha_bar_prev) * self.alphas.sqrt() / (1.0 - self.alpha_bar)

    def alpha_bar_at(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar at integer steps t (any shape); t = -1 means the clean data (alpha_bar = 1)."""
        ab = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar])
        return ab[t.long().cpu() + 1]
