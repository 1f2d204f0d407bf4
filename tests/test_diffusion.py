"""Forward process q(x_t | x_0), timestep sampling, loss weights and the eps-MSE objective."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ddpm.config import RunConfig
from ddpm.diffusion.forward import diffusion_loss, loss_weights, q_sample, sample_timesteps
from ddpm.diffusion.schedule import NoiseSchedule


def _linear_alpha_bar(T: int) -> np.ndarray:
    """alpha_bar of the linear schedule, recomputed here with numpy."""
    return np.cumprod(1.0 - np.linspace(1e-4, 0.02, T))


# ---------------------------------------------------------------------------------------------------------------
# q_sample
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("t", [0, 250, 999])
def test_q_sample_empirical_moments(name: str, t: int) -> None:
    """Over many noise draws with x_0 fixed, x_t has mean sqrt(ab) x_0 and variance 1 - ab per pixel."""
    sched = NoiseSchedule.create(name, 1000)
    ab = sched.alpha_bar[t].item()
    n = 20000
    gen = torch.Generator().manual_seed(1234 + t)
    x0 = torch.tensor([-1.0, -0.3, 0.4, 1.0]).view(1, 1, 2, 2)  # (1, C, H, W)
    noise = torch.randn(n, 1, 2, 2, generator=gen, dtype=torch.float64)
    xt = q_sample(sched, x0.double().expand(n, -1, -1, -1), torch.full((n,), t), noise)
    mean, var = xt.mean(0), xt.var(0)
    sd_mean = math.sqrt((1 - ab) / n)
    sd_var = (1 - ab) * math.sqrt(2 / (n - 1))
    assert ((mean - math.sqrt(ab) * x0[0].double()).abs() < 5 * sd_mean + 1e-12).all(), (mean, ab)
    assert ((var - (1 - ab)).abs() < 5 * sd_var + 1e-12).all(), (var, ab)


def test_q_sample_uses_each_samples_own_timestep() -> None:
    T = 100
    sched = NoiseSchedule.create("linear", T)
    abar = _linear_alpha_bar(T)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 2, 2, generator=gen) * 2 - 1
    noise = torch.randn(4, 3, 2, 2, generator=gen)
    t = torch.tensor([0, 99, 17, 50])
    xt = q_sample(sched, x0, t, noise)
    assert xt.dtype == torch.float32 and xt.shape == x0.shape
    for i, ti in enumerate(t.tolist()):
        expected = math.sqrt(abar[ti]) * x0[i] + math.sqrt(1 - abar[ti]) * noise[i]
        torch.testing.assert_close(xt[i], expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# sample_timesteps
# ---------------------------------------------------------------------------------------------------------------


def test_sample_timesteps_covers_range_and_is_uniform() -> None:
    T, n = 10, 50000
    t = sample_timesteps(n, T, generator=torch.Generator().manual_seed(0))
    assert t.shape == (n,) and t.dtype == torch.int64
    assert t.min().item() == 0 and t.max().item() == T - 1
    counts = torch.bincount(t, minlength=T).double()
    assert counts.numel() == T
    expected = n / T
    # chi-square with T-1 = 9 dof: the 99.9% quantile is 27.9
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 27.9, counts


def test_sample_timesteps_hits_both_ends_for_T1000() -> None:
    T = 1000
    t = sample_timesteps(100000, T, generator=torch.Generator().manual_seed(1))
    assert t.min().item() == 0 and t.max().item() == T - 1
    assert (t >= 0).all() and (t < T).all()


def test_sample_timesteps_generator_reproducible() -> None:
    a = sample_timesteps(64, 1000, generator=torch.Generator().manual_seed(5))
    b = sample_timesteps(64, 1000, generator=torch.Generator().manual_seed(5))
    c = sample_timesteps(64, 1000, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# ---------------------------------------------------------------------------------------------------------------
# loss_weights
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [5.0, 1.0])
def test_min_snr_weights(gamma: float) -> None:
    T = 1000
    sched = NoiseSchedule.create("linear", T)
    abar = _linear_alpha_bar(T)
    snr = abar / (1 - abar)
    t = torch.arange(T)
    w = loss_weights(sched, t, "min-snr", gamma=gamma)
    assert w.dtype == torch.float32 and w.shape == (T,)
    np.testing.assert_allclose(w.numpy(), np.minimum(snr, gamma) / snr, rtol=1e-6)
    low = snr < gamma
    assert low.any() and (~low).any()  # both regimes are exercised
    assert (w.numpy()[low] == 1.0).all()
    assert (w.numpy()[~low] < 1.0).all()


def test_trunc_min_snr_weights() -> None:
    """w_x0 = clip(SNR, 1, gamma) on the x0 error, i.e. clip(SNR, 1, gamma) / (SNR + 1) on the v error: 1 / (SNR + 1)
    where SNR < 1 (min-SNR's SNR / (SNR + 1) is smaller there), min-SNR's weight in between, gamma / (SNR + 1) above."""
    T, gamma = 1000, 5.0
    sched = NoiseSchedule.create("linear", T)
    abar = _linear_alpha_bar(T)
    snr = abar / (1 - abar)
    t = torch.arange(T)
    w = loss_weights(sched, t, "trunc-min-snr", gamma=gamma, prediction="v").numpy()
    np.testing.assert_allclose(w, np.clip(snr, 1.0, gamma) / (snr + 1), rtol=1e-6)
    high_noise, mid, low_noise = snr < 1, (snr >= 1) & (snr <= gamma), snr > gamma
    assert high_noise.any() and mid.any() and low_noise.any()  # all three regimes are exercised
    min_snr = loss_weights(sched, t, "min-snr", gamma=gamma, prediction="v").numpy()
    assert (w[high_noise] > min_snr[high_noise]).all()
    np.testing.assert_array_equal(w[~high_noise], min_snr[~high_noise])


@pytest.mark.parametrize("floor", [0.05, 0.3])
def test_min_snr_floor_weights(floor: float) -> None:
    """min-snr with a floor: w_x0 = clip(SNR, floor, gamma), so clip(SNR, floor, gamma) / (SNR + 1) on the v error:
    floor / (SNR + 1) where SNR < floor (plain min-SNR gives SNR / (SNR + 1) there, ~0 at the last steps), min-SNR's
    weight elsewhere; trunc-min-snr is the same with the floor raised to 1."""
    T, gamma = 1000, 5.0
    sched = NoiseSchedule.create("linear", T)
    snr = _linear_alpha_bar(T) / (1 - _linear_alpha_bar(T))
    t = torch.arange(T)
    w = loss_weights(sched, t, "min-snr", gamma=gamma, prediction="v", floor=floor).numpy()
    np.testing.assert_allclose(w, np.clip(snr, floor, gamma) / (snr + 1), rtol=1e-6)
    below = snr < floor
    assert below.any() and (~below).any()
    plain = loss_weights(sched, t, "min-snr", gamma=gamma, prediction="v").numpy()
    assert (w[below] > plain[below]).all() and w[-1] > 0.9 * floor > 1e3 * plain[-1]
    np.testing.assert_array_equal(w[~below], plain[~below])
    trunc = loss_weights(sched, t, "trunc-min-snr", gamma=gamma, prediction="v").numpy()
    np.testing.assert_array_equal(loss_weights(sched, t, "trunc-min-snr", gamma=gamma, prediction="v", floor=floor)
                                  .numpy(), trunc)  # a floor under trunc's 1 changes nothing
    with pytest.raises(ValueError, match="needs prediction v"):
        loss_weights(sched, t, "min-snr", prediction="eps", floor=floor)


def test_trunc_min_snr_needs_v() -> None:
    sched = NoiseSchedule.create("cosine", 100)
    with pytest.raises(ValueError, match="needs prediction v"):
        loss_weights(sched, torch.tensor([0, 99]), "trunc-min-snr", prediction="eps")
    with pytest.raises(ValueError, match="needs prediction v"):
        RunConfig.from_dict({"diffusion": {"loss_weighting": "trunc-min-snr", "prediction": "eps"}})
    RunConfig.from_dict({"diffusion": {"loss_weighting": "trunc-min-snr", "prediction": "v"}}).validate()


def test_none_weights_are_ones() -> None:
    sched = NoiseSchedule.create("cosine", 50)
    w = loss_weights(sched, torch.tensor([0, 10, 49]), "none")
    assert w.dtype == torch.float32
    assert torch.equal(w, torch.ones(3))


def test_unknown_weighting_raises() -> None:
    sched = NoiseSchedule.create("linear", 10)
    with pytest.raises(ValueError, match="unknown loss weighting"):
        loss_weights(sched, torch.tensor([0]), "snr+1")


# ---------------------------------------------------------------------------------------------------------------
# diffusion_loss
# ---------------------------------------------------------------------------------------------------------------


def _batch(seed: int = 0, b: int = 6):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(b, 2, 4, 4, generator=gen) * 2 - 1
    noise = torch.randn(b, 2, 4, 4, generator=gen)
    cond = torch.randint(0, 3, (b,), generator=gen)
    return x0, noise, cond


@pytest.mark.parametrize("weighting", ["none", "min-snr"])
def test_loss_is_zero_for_oracle_model(weighting: str) -> None:
    """A model that inverts q_sample exactly (knowing x_0) recovers eps: zero loss.
    This also checks that the model sees x_t = q_sample(x_0, t, eps) and the same t."""
    T = 1000
    sched = NoiseSchedule.create("linear", T)
    abar = torch.from_numpy(_linear_alpha_bar(T))
    x0, noise, cond = _batch()
    t = torch.tensor([0, 1, 10, 500, 998, 999])
    seen = {}

    def oracle(xt: torch.Tensor, tt: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        seen["t"], seen["c"] = tt.clone(), c.clone()
        ab = abar[tt].view(-1, 1, 1, 1)
        return ((xt.double() - ab.sqrt() * x0.double()) / (1 - ab).sqrt()).float()

    loss, per_sample = diffusion_loss(oracle, sched, x0, cond, t, noise, weighting=weighting)
    assert torch.equal(seen["t"], t) and torch.equal(seen["c"], cond)
    assert loss.ndim == 0 and per_sample.shape == (6,)
    assert loss.item() < 1e-8
    assert per_sample.max().item() < 1e-8


def test_loss_is_zero_when_model_returns_the_noise() -> None:
    sched = NoiseSchedule.create("cosine", 100)
    x0, noise, cond = _batch(1)
    t = torch.tensor([0, 5, 20, 50, 98, 99])
    loss, per_sample = diffusion_loss(lambda xt, tt, c: noise.clone(), sched, x0, cond, t, noise)
    assert loss.item() == 0.0
    assert torch.equal(per_sample, torch.zeros(6))


@pytest.mark.parametrize("weighting", ["none", "min-snr"])
def test_loss_of_zero_model(weighting: str) -> None:
    T = 1000
    sched = NoiseSchedule.create("linear", T)
    x0, noise, cond = _batch(2)
    t = torch.tensor([0, 3, 40, 200, 600, 999])
    zero_model = lambda xt, tt, c: torch.zeros_like(xt)  # noqa: E731
    loss, per_sample = diffusion_loss(zero_model, sched, x0, cond, t, noise, weighting=weighting)
    expected_per_sample = (noise.double() ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(per_sample.double(), expected_per_sample, rtol=1e-6, atol=0)
    if weighting == "none":
        expected = (noise.double() ** 2).mean()
    else:
        abar = _linear_alpha_bar(T)[t.numpy()]
        snr = torch.from_numpy(abar / (1 - abar))
        expected = (torch.clamp(snr, max=5.0) / snr * expected_per_sample).mean()
        assert not math.isclose(expected.item(), expected_per_sample.mean().item(), rel_tol=1e-3)  # weights matter
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_backpropagates_to_model_parameters() -> None:
    sched = NoiseSchedule.create("linear", 50)
    x0, noise, cond = _batch(3)
    scale = torch.nn.Parameter(torch.tensor(0.5))
    loss, per_sample = diffusion_loss(lambda xt, tt, c: scale * xt, sched, x0, cond, torch.full((6,), 10), noise)
    loss.backward()
    assert scale.grad is not None and scale.grad.abs().item() > 0
    assert not per_sample.requires_grad
