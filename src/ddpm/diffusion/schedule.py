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

with alpha_bar_{-1} = 1, so at t = 0 the posterior is a point mass at x_0. Index -1 stands for the clean sample
x_0 throughout; `alpha_bar_of` is the one place that says alpha_bar_{-1} = 1.

Strided (samplers that skip steps). For -1 <= s < t, q(x_t | x_s) = N(sqrt(alpha_bar_t / alpha_bar_s) x_s, beta_{t|s} I)
with beta_{t|s} = 1 - alpha_bar_t / alpha_bar_s, the noise added from s to t, and eqs. 6-7 become

    mu_tilde_{t|s}   = [sqrt(alpha_bar_s) beta_{t|s} / (1 - alpha_bar_t)] x_0
                     + [sqrt(alpha_bar_t / alpha_bar_s) (1 - alpha_bar_s) / (1 - alpha_bar_t)] x_t
    beta_tilde_{t|s} = beta_{t|s} (1 - alpha_bar_s) / (1 - alpha_bar_t)

which at s = t - 1 are the per-step forms above (beta_{t|t-1} = beta_t, alpha_bar_t / alpha_bar_{t-1} = alpha_t).

Everything is computed once, in float64, when the schedule is built, and cast by the caller: the schedule is data,
not weights. Scalars for the step rules come out as python floats of those float64 values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

ScheduleName = Literal["linear", "cosine"]
from ddpm.config import MAX_TIMESTEPS, SCHEDULES  # the most steps T (its tables are O(T)); linear | cosine

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
class Posterior:
    """q(x_s | x_t, x_0) = N(coef_x0 x_0 + coef_xt x_t, var I) for one pair s < t, as python floats from float64.
    var_beta_tilde = beta_tilde_{t|s} is the true posterior variance, var_beta = beta_{t|s} its upper bound; the
    two choices of DDPM sec. 3.2."""

    coef_x0: float
    coef_xt: float
    var_beta_tilde: float
    var_beta: float


@dataclass(frozen=True)
class NoiseSchedule:
    """All per-step coefficients of a discrete Gaussian diffusion, each of shape (T,) in float64, computed once from
    `betas` when the schedule is built."""

    name: str
    betas: torch.Tensor
    alphas: torch.Tensor = field(init=False, repr=False, compare=False)  # alpha_t = 1 - beta_t
    alpha_bar: torch.Tensor = field(init=False, repr=False, compare=False)  # alpha_bar_t = prod_{s<=t} alpha_s
    alpha_bar_prev: torch.Tensor = field(init=False, repr=False, compare=False)  # alpha_bar_{t-1}, alpha_bar_{-1} = 1
    sqrt_alpha_bar: torch.Tensor = field(init=False, repr=False, compare=False)
    sqrt_one_minus_alpha_bar: torch.Tensor = field(init=False, repr=False, compare=False)
    snr: torch.Tensor = field(init=False, repr=False, compare=False)  # alpha_bar_t / (1 - alpha_bar_t)
    posterior_variance: torch.Tensor = field(init=False, repr=False, compare=False)  # beta_tilde_t (eq. 7)
    posterior_mean_coef_x0: torch.Tensor = field(init=False, repr=False, compare=False)  # of x_0 in mu_tilde_t (eq. 7)
    posterior_mean_coef_xt: torch.Tensor = field(init=False, repr=False, compare=False)  # of x_t in mu_tilde_t (eq. 7)
    _alpha_bar_from_clean: torch.Tensor = field(init=False, repr=False, compare=False)  # (T+1,): alpha_bar_{i-1} at i

    def __post_init__(self) -> None:
        def put(name: str, value: torch.Tensor) -> None:
            object.__setattr__(self, name, value)

        alphas = 1.0 - self.betas
        alpha_bar = torch.cumprod(alphas, dim=0)
        from_clean = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar])  # alpha_bar_{-1} = 1, then alpha_bar_t
        alpha_bar_prev = from_clean[:-1]
        put("alphas", alphas)
        put("alpha_bar", alpha_bar)
        put("alpha_bar_prev", alpha_bar_prev)
        put("_alpha_bar_from_clean", from_clean)
        put("sqrt_alpha_bar", alpha_bar.sqrt())
        put("sqrt_one_minus_alpha_bar", (1.0 - alpha_bar).sqrt())
        put("snr", alpha_bar / (1.0 - alpha_bar))
        # eq. 7: beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t); zero at t = 0
        put("posterior_variance", self.betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar))
        # eq. 7: mu_tilde_t = [beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t)] x_0
        #                   + [(1 - alpha_bar_{t-1}) sqrt(alpha_t) / (1 - alpha_bar_t)] x_t
        put("posterior_mean_coef_x0", self.betas * alpha_bar_prev.sqrt() / (1.0 - alpha_bar))
        put("posterior_mean_coef_xt", (1.0 - alpha_bar_prev) * alphas.sqrt() / (1.0 - alpha_bar))

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
        """T."""
        return self.betas.shape[0]

    def alpha_bar_of(self, t: int) -> float:
        """alpha_bar_t as a python float (of the float64 value) for t in -1..T-1; t = -1 is the clean sample x_0,
        alpha_bar_{-1} = 1."""
        if not -1 <= t < self.num_steps:
            raise IndexError(f"step {t} is outside -1..{self.num_steps - 1}")
        return float(self._alpha_bar_from_clean[t + 1])

    def alpha_bar_at(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar at integer steps t (any shape), float64; t = -1 means the clean data (alpha_bar = 1)."""
        return self._alpha_bar_from_clean[t.long().cpu() + 1]

    def posterior(self, t: int, s: int) -> Posterior:
        """q(x_s | x_t, x_0) for -1 <= s < t (DDPM eqs. 6-7 generalised to strides, see the module doc):

        beta_{t|s}       = 1 - alpha_bar_t / alpha_bar_s
        coef_x0          = sqrt(alpha_bar_s) beta_{t|s} / (1 - alpha_bar_t)
        coef_xt          = sqrt(alpha_bar_t / alpha_bar_s) (1 - alpha_bar_s) / (1 - alpha_bar_t)
        beta_tilde_{t|s} = beta_{t|s} (1 - alpha_bar_s) / (1 - alpha_bar_t)

        in python floats from the float64 alpha_bar. s = t - 1 gives the per-step tensors at t (to rounding);
        s = -1 gives a point mass at x_0 (coef_x0 = 1, coef_xt = 0, beta_tilde = 0)."""
        if not -1 <= s < t < self.num_steps:
            raise ValueError(f"need -1 <= s < t < {self.num_steps}, got t = {t}, s = {s}")
        ab_t, ab_s = self.alpha_bar_of(t), self.alpha_bar_of(s)
        beta_ts = 1 - ab_t / ab_s
        return Posterior(
            coef_x0=math.sqrt(ab_s) * beta_ts / (1 - ab_t),
            coef_xt=math.sqrt(ab_t / ab_s) * (1 - ab_s) / (1 - ab_t),
            var_beta_tilde=beta_ts * (1 - ab_s) / (1 - ab_t),
            var_beta=beta_ts,
        )
