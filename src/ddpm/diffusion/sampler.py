"""Reverse-process samplers. Each is a step rule x_t -> x_{t_prev} given explicit (t, t_prev) and the model's eps;
no step rule calls the network. One loop (`sample`) drives any rule over a list of (t, t_prev) pairs.

t_prev = -1 denotes the clean sample (alpha_bar_{-1} = 1, `NoiseSchedule.alpha_bar_of`). For a pair (t, s) with
s < t, define
    alpha_bar_t, alpha_bar_s,   beta_{t|s} = 1 - alpha_bar_t / alpha_bar_s   (the noise added from s to t)
which reduce to beta_t when s = t - 1; the posterior q(x_s | x_t, x_0) is `NoiseSchedule.posterior(t, s)`.

`dpm++2m` (DPM-Solver++(2M)) and `dpm++2m-sde` are multistep: their step also takes the previous step's x0_hat
(`Denoised`), which the loop carries from one step to the next; the network is still called only by the loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ddpm.common.seeding import sample_seed
from ddpm.diffusion.editing import Guide
from ddpm.diffusion.forward import EpsModel, q_jump
from ddpm.diffusion.guidance import guided_eps
from ddpm.diffusion.sampling import VARIANCES, Sampler, SamplingConfig, Variance
from ddpm.diffusion.schedule import NoiseSchedule


class PerSampleNoise:
    """One generator per image, so image i's noise depends on (seed, i) only, never on the batch it sits in."""

    def __init__(self, seed: int, indices: Sequence[int]) -> None:
        self.generators = [torch.Generator().manual_seed(sample_seed(seed, i)) for i in indices]

    def randn(self, shape: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
        """(B, *shape) standard normal; drawn on CPU for bitwise reproducibility across devices."""
        return torch.stack([torch.randn(tuple(shape), generator=g) for g in self.generators]).to(device)


def timestep_pairs(num_train_steps: int, num_steps: int) -> list[tuple[int, int]]:
    """`num_steps` evenly spaced steps ending at the last training step ("trailing" spacing, Lin et al. 2024):
    t_k = floor(T (N - k) / N) - 1 for k = 0..N-1, paired with the next one and finally -1.
    N = T gives every step T-1, ..., 0."""
    if not 1 <= num_steps <= num_train_steps:
        raise ValueError(f"steps must be between 1 and {num_train_steps}, got {num_steps}")
    ts = [num_train_steps * (num_steps - k) // num_steps - 1 for k in range(num_steps)]
    return list(zip(ts, ts[1:] + [-1]))


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, ab_t: float) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)   (DDPM eq. 15 solved for x_0)."""
    return (x_t - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)


def _x0_and_eps(x_t: torch.Tensor, eps: torch.Tensor, ab_t: float, clip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x0 = predict_x0(x_t, eps, ab_t)
    if clip:  # keep x0_hat in the data range; eps re-derived so both stay consistent with x_t
        x0 = x0.clamp(-1, 1)
        eps = (x_t - math.sqrt(ab_t) * x0) / math.sqrt(1 - ab_t)
    return x0, eps


def ddpm_step(
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t: int,
    t_prev: int,
    noise: torch.Tensor | None,
    variance: Variance | str = Variance.BETA_TILDE,
    clip: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ancestral step x_{t_prev} ~ q(x_{t_prev} | x_t, x0_hat), the posterior of DDPM eqs. 6-7 generalised to strides
    (`NoiseSchedule.posterior(t, t_prev)`):

    mean = sqrt(ab_s) beta_{t|s} / (1 - ab_t) x0_hat + sqrt(ab_t / ab_s) (1 - ab_s) / (1 - ab_t) x_t
    var  = beta_tilde = beta_{t|s} (1 - ab_s) / (1 - ab_t)   or   beta_{t|s}   (the two choices of DDPM sec. 3.2)
    No noise is added on the final step (t_prev = -1). Returns (x_{t_prev}, x0_hat)."""
    q = schedule.posterior(t, t_prev)
    x0, _ = _x0_and_eps(x_t, eps, schedule.alpha_bar_of(t), clip)
    mean = q.coef_x0 * x0 + q.coef_xt * x_t
    if t_prev < 0:
        return mean, x0
    if variance == Variance.BETA_TILDE:
        var = q.var_beta_tilde
    elif variance == Variance.BETA:
        var = q.var_beta
    else:
        raise ValueError(f"unknown variance {variance!r}; choose one of {', '.join(VARIANCES)}")
    assert noise is not None, "an ancestral step needs noise"
    return mean + math.sqrt(var) * noise, x0


def ddim_step(
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t: int,
    t_prev: int,
    noise: torch.Tensor | None,
    eta: float = 0.0,
    clip: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DDIM step (Song et al. 2021, eq. 12):
    x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - sigma^2) eps + sigma z,
    sigma = eta sqrt((1 - ab_s) / (1 - ab_t)) sqrt(1 - ab_t / ab_s).  eta = 0: deterministic; eta = 1: DDPM-like."""
    ab_t, ab_s = schedule.alpha_bar_of(t), schedule.alpha_bar_of(t_prev)
    x0, eps = _x0_and_eps(x_t, eps, ab_t, clip)
    sigma = eta * math.sqrt((1 - ab_s) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_s)
    x_s = math.sqrt(ab_s) * x0 + math.sqrt(max(1 - ab_s - sigma**2, 0.0)) * eps
    if sigma > 0:
        assert noise is not None, "a stochastic DDIM step (eta > 0) needs noise"
        x_s = x_s + sigma * noise
    return x_s, x0


@dataclass(frozen=True)
class Denoised:
    """x0_hat predicted at step t: what the multistep DPM-Solver++ remembers of its previous step."""

    t: int
    x0: torch.Tensor


def log_snr_half(schedule: NoiseSchedule, t: int) -> float:
    """lambda_t = log(alpha_t / sigma_t) = log(sqrt(ab_t) / sqrt(1 - ab_t)), half the log-SNR; from float64."""
    ab = schedule.alpha_bar_of(t)
    return 0.5 * (math.log(ab) - math.log1p(-ab))


def _multistep_x0(schedule: NoiseSchedule, x0: torch.Tensor, t: int, t_prev: int, previous: Denoised | None) -> torch.Tensor:
    """D, the data prediction DPM-Solver++(2M) integrates over [lambda_t, lambda_s] (Lu et al. 2022, Algorithm 2):
    x0_hat alone for the first (first-order) step; else, with previous = (u, x0_u), u > t, h = lambda_s - lambda_t
    and r = (lambda_t - lambda_u) / h:   D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_u."""
    if previous is None:
        return x0
    lam_t = log_snr_half(schedule, t)
    r = (lam_t - log_snr_half(schedule, previous.t)) / (log_snr_half(schedule, t_prev) - lam_t)
    return (1 + 0.5 / r) * x0 - (0.5 / r) * previous.x0


def dpmpp_2m_step(
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t: int,
    t_prev: int,
    previous: Denoised | None,
    clip: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DPM-Solver++(2M) step (Lu et al. 2022, "DPM-Solver++", Algorithm 2), data prediction, from t to s = t_prev.

    With alpha = sqrt(ab), sigma = sqrt(1 - ab), lambda = log(alpha / sigma), h = lambda_s - lambda_t > 0 and D from
    `_multistep_x0` (x0_hat on the first step, which makes it DDIM with eta 0):
        x_s = (sigma_s / sigma_t) x_t + alpha_s (1 - e^{-h}) D
    s = -1 (the clean sample: sigma_s = 0, lambda_s = +inf) returns x0_hat, so the last step is always first order,
    as in diffusers with final_sigmas_type="zero". Returns (x_s, x0_hat); pass Denoised(t, x0_hat) to the next step."""
    ab_t = schedule.alpha_bar_of(t)
    x0, _ = _x0_and_eps(x_t, eps, ab_t, clip)
    if t_prev < 0:
        return x0, x0
    ab_s = schedule.alpha_bar_of(t_prev)
    h = log_snr_half(schedule, t_prev) - log_snr_half(schedule, t)
    ratio = math.sqrt((1 - ab_s) / (1 - ab_t))  # sigma_s / sigma_t
    coef = -math.sqrt(ab_s) * math.expm1(-h)  # alpha_s (1 - e^{-h})
    return ratio * x_t + coef * _multistep_x0(schedule, x0, t, t_prev, previous), x0


def dpmpp_2m_sde_step(
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    eps: torch.Tensor,
    t: int,
    t_prev: int,
    previous: Denoised | None,
    noise: torch.Tensor | None,
    clip: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DPM-Solver++(2M) SDE step (Lu et al. 2022, sec. 5 / diffusers' "sde-dpmsolver++", midpoint), with D as above:
        x_s = (sigma_s / sigma_t) e^{-h} x_t + alpha_s (1 - e^{-2h}) D + sigma_s sqrt(1 - e^{-2h}) z
    Its first step (D = x0_hat) is the DDPM posterior step with variance beta_tilde. s = -1 returns x0_hat (no noise).
    Returns (x_s, x0_hat)."""
    ab_t = schedule.alpha_bar_of(t)
    x0, _ = _x0_and_eps(x_t, eps, ab_t, clip)
    if t_prev < 0:
        return x0, x0
    assert noise is not None, "a DPM-Solver++ SDE step needs noise"
    ab_s = schedule.alpha_bar_of(t_prev)
    h = log_snr_half(schedule, t_prev) - log_snr_half(schedule, t)
    ratio = math.sqrt((1 - ab_s) / (1 - ab_t)) * math.exp(-h)  # (sigma_s / sigma_t) e^{-h}
    one_minus = -math.expm1(-2 * h)  # 1 - e^{-2h}
    d = _multistep_x0(schedule, x0, t, t_prev, previous)
    return ratio * x_t + math.sqrt(ab_s) * one_minus * d + math.sqrt((1 - ab_s) * one_minus) * noise, x0


StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


@torch.no_grad()
def sample(
    model: EpsModel,
    schedule: NoiseSchedule,
    cond: torch.Tensor,
    shape: Sequence[int],
    noise: PerSampleNoise,
    config: SamplingConfig,
    *,
    null_id: int,
    clip: bool = True,
    device: torch.device | str = "cpu",
    callback: StepCallback | None = None,
    guide: Guide | None = None,
) -> torch.Tensor:
    """Draw len(cond) images of `shape` (C, H, W) from N(0, I) down to x_0 in [-1, 1] with `config`'s sampler,
    steps (resolved against T), guidance (a number: `SamplingConfig.resolved` gives the model's default), eta and
    variance (its seed and batch size are the caller's: `noise` is already seeded, `cond` is one batch). Each step
    is one network call (a batch of 2B under guidance).
    callback(t, x_t, x0_hat) after each step, for progress and trajectories.
    `guide` (diffusion/editing.py: image to image, inpainting, a given x_T) chooses the steps, the starting x and
    what happens to x after each step; a pair that goes up (t_prev > t) is a jump x_{t_prev} ~ q(x_{t_prev} | x_t),
    with no network call, after which the multistep memory starts afresh."""
    if config.guidance is None:
        raise ValueError("sample() needs a guidance weight: resolve the config for the model first "
                         "(SamplingConfig.resolved)")
    kind = config.sampler
    cond = cond.to(device)
    pairs = timestep_pairs(schedule.num_steps, config.num_steps(schedule.num_steps))
    if guide is not None:
        pairs = guide.plan(pairs)
    x = noise.randn(shape, device)  # x_T ~ N(0, I)
    if guide is not None:
        x = guide.start(schedule, pairs[0][0] if pairs else -1, x)
    previous: Denoised | None = None  # the multistep rules' memory: the last step's x0_hat
    for t, t_prev in pairs:
        if t_prev > t:  # back up (RePaint's resampling)
            x, previous = q_jump(schedule, x, t, t_prev, noise.randn(shape, device)), None
            continue
        tt = torch.full((x.shape[0],), t, device=device, dtype=torch.long)
        eps = guided_eps(model, x, tt, cond, null_id, config.guidance).float()
        needs_noise = t_prev >= 0 and (kind.stochastic or (kind is Sampler.DDIM and config.eta > 0))
        z = noise.randn(shape, device) if needs_noise else None
        if kind is Sampler.DDPM:
            x, x0 = ddpm_step(schedule, x, eps, t, t_prev, z, variance=config.variance, clip=clip)
        elif kind is Sampler.DDIM:
            x, x0 = ddim_step(schedule, x, eps, t, t_prev, z, eta=config.eta, clip=clip)
        elif kind is Sampler.DPMPP_2M:
            x, x0 = dpmpp_2m_step(schedule, x, eps, t, t_prev, previous, clip=clip)
        else:
            x, x0 = dpmpp_2m_sde_step(schedule, x, eps, t, t_prev, previous, z, clip=clip)
        if kind.multistep:
            previous = Denoised(t, x0)
        if guide is not None:
            x = guide.after_step(schedule, t_prev, x, lambda: noise.randn(shape, device))
        if callback is not None:
            callback(t, x, x0)
    return x.clamp(-1, 1)
