"""NoiseSchedule against diffusers' DDPMScheduler and against closed forms recomputed here with plain Python/numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ddpm.diffusion.schedule import NoiseSchedule

diffusers = pytest.importorskip("diffusers")

DIFFUSERS_NAME = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
NAMES = ("linear", "cosine")
STEPS = (1000, 37)


def _cosine_f(u: float, s: float = 0.008) -> float:
    return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2


def _cosine_betas_reference(T: int) -> np.ndarray:
    """Nichol & Dhariwal 2021: beta_t = min(1 - abar((t+1)/T) / abar(t/T), 0.999), computed with a plain loop."""
    return np.array([min(1.0 - _cosine_f((t + 1) / T) / _cosine_f(t / T), 0.999) for t in range(T)])


def _linear_betas_reference(T: int) -> np.ndarray:
    return np.array([1e-4 + (0.02 - 1e-4) * t / (T - 1) for t in range(T)])


def _cumprod_loop(betas: np.ndarray) -> np.ndarray:
    out, acc = [], 1.0
    for b in betas:
        acc *= 1.0 - b
        out.append(acc)
    return np.array(out)


# ---------------------------------------------------------------------------------------------------------------
# diffusers (float32 storage: compare in float64 with an absolute tolerance of 1e-6)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", STEPS)
@pytest.mark.parametrize("name", NAMES)
def test_betas_and_alpha_bar_match_diffusers(name: str, T: int) -> None:
    ours = NoiseSchedule.create(name, T)
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=DIFFUSERS_NAME[name])
    assert ours.betas.shape == ref.betas.shape == (T,)
    torch.testing.assert_close(ours.betas, ref.betas.double(), rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.alphas, ref.alphas.double(), rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.alpha_bar, ref.alphas_cumprod.double(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("T", STEPS)
@pytest.mark.parametrize("name", NAMES)
def test_posterior_variance_matches_diffusers_fixed_small(name: str, T: int) -> None:
    ours = NoiseSchedule.create(name, T)
    ref = diffusers.DDPMScheduler(
        num_train_timesteps=T, beta_schedule=DIFFUSERS_NAME[name], variance_type="fixed_small"
    )
    ref_var = torch.stack([ref._get_variance(t) for t in range(T)]).double()  # clamped at 1e-20 for t = 0
    torch.testing.assert_close(ours.posterior_variance, ref_var, rtol=1e-4, atol=1e-6)
    large = torch.stack([ref._get_variance(t, variance_type="fixed_large") for t in range(T)]).double()
    torch.testing.assert_close(ours.betas, large, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", STEPS)
def test_linear_closed_form_and_endpoints(T: int) -> None:
    sched = NoiseSchedule.create("linear", T)
    betas = sched.betas.numpy()
    np.testing.assert_allclose(betas, _linear_betas_reference(T), rtol=0, atol=1e-15)
    assert betas[0] == pytest.approx(1e-4, abs=1e-15)
    assert betas[-1] == pytest.approx(0.02, abs=1e-15)
    np.testing.assert_allclose(sched.alpha_bar.numpy(), _cumprod_loop(_linear_betas_reference(T)), rtol=1e-12, atol=0)


@pytest.mark.parametrize("T", STEPS)
def test_cosine_closed_form(T: int) -> None:
    sched = NoiseSchedule.create("cosine", T)
    np.testing.assert_allclose(sched.betas.numpy(), _cosine_betas_reference(T), rtol=1e-12, atol=1e-15)
    # Away from the capped last step, alpha_bar_t (paper step t+1) is f((t+1)/T) / f(0) in closed form.
    closed = np.array([_cosine_f((t + 1) / T) / _cosine_f(0.0) for t in range(T - 1)])
    np.testing.assert_allclose(sched.alpha_bar.numpy()[:-1], closed, rtol=1e-10, atol=0)


def test_cosine_cap_binds_only_at_last_step_for_T1000() -> None:
    T = 1000
    sched = NoiseSchedule.create("cosine", T)
    raw_last = 1.0 - _cosine_f(T / T) / _cosine_f((T - 1) / T)
    assert raw_last > 0.999  # f(1) = 0, so the uncapped beta would be 1
    assert sched.betas[-1].item() == pytest.approx(0.999, abs=1e-15)
    assert (sched.betas[:-1] < 0.999).all()
    assert sched.alpha_bar[-1].item() == pytest.approx(sched.alpha_bar[-2].item() * (1 - 0.999), rel=1e-12)
    assert sched.alpha_bar[-1].item() > 0  # the cap keeps alpha_bar (and thus sqrt(alpha_bar)) strictly positive


@pytest.mark.parametrize("T", STEPS)
@pytest.mark.parametrize("name", NAMES)
def test_posterior_matches_gaussian_conditioning(name: str, T: int) -> None:
    """mu_tilde and beta_tilde from Bayes' rule for scalar Gaussians, via the joint of (x_{t-1}, x_t) given x_0:

    x_{t-1} | x_0 ~ N(sqrt(ab_{t-1}) x_0, 1 - ab_{t-1}),  x_t | x_{t-1} ~ N(sqrt(alpha_t) x_{t-1}, beta_t)
    => E[x_{t-1} | x_t, x_0] = m1 + C12 / C22 (x_t - m2),  Var = C11 - C12^2 / C22.
    """
    sched = NoiseSchedule.create(name, T)
    betas = _linear_betas_reference(T) if name == "linear" else _cosine_betas_reference(T)
    abar = _cumprod_loop(betas)
    rng = np.random.default_rng(0)
    coef_x0 = sched.posterior_mean_coef_x0.numpy()
    coef_xt = sched.posterior_mean_coef_xt.numpy()
    var = sched.posterior_variance.numpy()
    for t in range(T):
        ab_prev = abar[t - 1] if t > 0 else 1.0
        a_t, b_t = 1.0 - betas[t], betas[t]
        x0, xt = rng.normal(size=2)
        m1 = math.sqrt(ab_prev) * x0
        m2 = math.sqrt(a_t) * m1
        c11 = 1.0 - ab_prev
        c12 = math.sqrt(a_t) * c11
        c22 = a_t * c11 + b_t
        mean = m1 + c12 / c22 * (xt - m2)
        cond_var = c11 - c12**2 / c22
        assert coef_x0[t] * x0 + coef_xt[t] * xt == pytest.approx(mean, rel=1e-9, abs=1e-12), t
        assert var[t] == pytest.approx(cond_var, rel=1e-9, abs=1e-15), t
    # at t = 0 the posterior is a point mass at x_0
    assert coef_x0[0] == pytest.approx(1.0, abs=1e-12)
    assert coef_xt[0] == pytest.approx(0.0, abs=1e-12)
    assert var[0] == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("T", STEPS)
@pytest.mark.parametrize("name", NAMES)
def test_posterior_one_step_back_is_the_per_step_tensors(name: str, T: int) -> None:
    """posterior(t, t-1) against the tensors of eq. 7; equal to rounding only, since beta_{t|t-1} = 1 - ab_t / ab_{t-1}
    is beta_t recomputed through the cumulative product (a relative 4e-13 for the linear schedule's beta_0 = 1e-4)."""
    sched = NoiseSchedule.create(name, T)
    for t in range(T):
        q = sched.posterior(t, t - 1)
        assert q.coef_x0 == pytest.approx(sched.posterior_mean_coef_x0[t].item(), rel=1e-11, abs=1e-15), t
        assert q.coef_xt == pytest.approx(sched.posterior_mean_coef_xt[t].item(), rel=1e-11, abs=1e-15), t
        assert q.var_beta_tilde == pytest.approx(sched.posterior_variance[t].item(), rel=1e-11, abs=1e-15), t
        assert q.var_beta == pytest.approx(sched.betas[t].item(), rel=1e-11, abs=1e-15), t


@pytest.mark.parametrize("T", STEPS)
@pytest.mark.parametrize("name", NAMES)
def test_strided_posterior_matches_gaussian_conditioning(name: str, T: int) -> None:
    """q(x_s | x_t, x_0) for strides s < t - 1 from Bayes' rule on the joint of (x_s, x_t) given x_0, in float64 from
    the loop's alpha_bar:  x_s | x_0 ~ N(sqrt(ab_s) x_0, 1 - ab_s),  x_t | x_s ~ N(a x_s, b) with a = sqrt(ab_t / ab_s),
    b = 1 - ab_t / ab_s  =>  E[x_s | x_t, x_0] = sqrt(ab_s) x_0 + C12 / C22 (x_t - a sqrt(ab_s) x_0),
    Var = C11 - C12^2 / C22 with C11 = 1 - ab_s, C12 = a C11, C22 = a^2 C11 + b."""
    sched = NoiseSchedule.create(name, T)
    betas = _linear_betas_reference(T) if name == "linear" else _cosine_betas_reference(T)
    abar = _cumprod_loop(betas)
    for t in range(T):
        for s in sorted({-1, t // 2, t - 2, t - 11} & set(range(-1, t - 1))):
            ab_t, ab_s = abar[t], (abar[s] if s >= 0 else 1.0)
            a, b = math.sqrt(ab_t / ab_s), 1.0 - ab_t / ab_s
            c11 = 1.0 - ab_s
            c12, c22 = a * c11, a * a * c11 + b
            gain = c12 / c22
            q = sched.posterior(t, s)
            assert q.coef_xt == pytest.approx(gain, rel=1e-9, abs=1e-15), (t, s)
            assert q.coef_x0 == pytest.approx(math.sqrt(ab_s) * (1.0 - gain * a), rel=1e-9, abs=1e-12), (t, s)
            assert q.var_beta_tilde == pytest.approx(c11 - c12**2 / c22, rel=1e-9, abs=1e-15), (t, s)
            assert q.var_beta == pytest.approx(b, rel=1e-9, abs=1e-15), (t, s)
    for t in range(T):  # s = -1: a point mass at x_0, exactly
        q = sched.posterior(t, -1)
        assert (q.coef_x0, q.coef_xt, q.var_beta_tilde) == (1.0, 0.0, 0.0), t
        assert q.var_beta == 1.0 - sched.alpha_bar[t].item(), t


@pytest.mark.parametrize(("t", "s"), [(5, 5), (5, 7), (5, -2), (50, 3), (-1, -1)])
def test_posterior_needs_s_before_t_within_the_schedule(t: int, s: int) -> None:
    with pytest.raises(ValueError, match="need -1 <= s < t"):
        NoiseSchedule.create("linear", 50).posterior(t, s)


@pytest.mark.parametrize("name", NAMES)
def test_snr_closed_form(name: str) -> None:
    sched = NoiseSchedule.create(name, 100)
    betas = _linear_betas_reference(100) if name == "linear" else _cosine_betas_reference(100)
    abar = _cumprod_loop(betas)
    np.testing.assert_allclose(sched.snr.numpy(), abar / (1 - abar), rtol=1e-9)
    np.testing.assert_allclose(sched.sqrt_alpha_bar.numpy(), np.sqrt(abar), rtol=1e-12)
    np.testing.assert_allclose(sched.sqrt_one_minus_alpha_bar.numpy(), np.sqrt(1 - abar), rtol=1e-9)
    np.testing.assert_allclose(sched.alpha_bar_prev.numpy(), np.concatenate([[1.0], abar[:-1]]), rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# structure
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_alpha_bar_at(name: str) -> None:
    sched = NoiseSchedule.create(name, 50)
    assert sched.alpha_bar_at(torch.tensor(-1)).item() == 1.0
    t = torch.tensor([[-1, 0], [7, 49]])
    got = sched.alpha_bar_at(t)
    assert got.shape == (2, 2)
    ab = sched.alpha_bar
    expected = torch.tensor([[1.0, ab[0].item()], [ab[7].item(), ab[49].item()]], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_alpha_bar_of_is_the_one_scalar_accessor(name: str) -> None:
    sched = NoiseSchedule.create(name, 50)
    assert sched.alpha_bar_of(-1) == 1.0 and type(sched.alpha_bar_of(-1)) is float  # the clean sample
    for t in range(50):
        got = sched.alpha_bar_of(t)
        assert type(got) is float and got == sched.alpha_bar[t].item(), t  # the float64 value, exactly
    for t in (-2, 50):
        with pytest.raises(IndexError, match="outside -1..49"):
            sched.alpha_bar_of(t)


@pytest.mark.parametrize("name", NAMES)
def test_derived_tensors_are_built_once_with_the_closed_forms_bit_for_bit(name: str) -> None:
    """Each derived tensor is computed when the schedule is built (the same object on every access) and holds
    exactly what the closed form gives from betas."""
    sched = NoiseSchedule.create(name, 100)
    betas = sched.betas
    alphas = 1.0 - betas
    ab = torch.cumprod(alphas, dim=0)
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    expected = {
        "alphas": alphas,
        "alpha_bar": ab,
        "alpha_bar_prev": ab_prev,
        "sqrt_alpha_bar": ab.sqrt(),
        "sqrt_one_minus_alpha_bar": (1.0 - ab).sqrt(),
        "snr": ab / (1.0 - ab),
        "posterior_variance": betas * (1.0 - ab_prev) / (1.0 - ab),
        "posterior_mean_coef_x0": betas * ab_prev.sqrt() / (1.0 - ab),
        "posterior_mean_coef_xt": (1.0 - ab_prev) * alphas.sqrt() / (1.0 - ab),
    }
    for attr, value in expected.items():
        assert getattr(sched, attr) is getattr(sched, attr), attr
        assert torch.equal(getattr(sched, attr), value), attr


@pytest.mark.parametrize("name", NAMES)
def test_everything_is_float64_with_shape_T(name: str) -> None:
    T = 20
    sched = NoiseSchedule.create(name, T)
    assert sched.num_steps == T
    for attr in (
        "betas", "alphas", "alpha_bar", "alpha_bar_prev", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar", "snr",
        "posterior_variance", "posterior_mean_coef_x0", "posterior_mean_coef_xt",
    ):
        value = getattr(sched, attr)
        assert value.dtype == torch.float64, attr
        assert value.shape == (T,), attr
    assert sched.alpha_bar_at(torch.tensor([-1, 3])).dtype == torch.float64


@pytest.mark.parametrize("T", STEPS)
@pytest.mark.parametrize("name", NAMES)
def test_alpha_bar_strictly_decreasing_in_unit_interval(name: str, T: int) -> None:
    ab = NoiseSchedule.create(name, T).alpha_bar
    assert (ab[1:] < ab[:-1]).all()
    assert (ab > 0).all() and (ab < 1).all()
    betas = NoiseSchedule.create(name, T).betas
    assert (betas > 0).all() and (betas < 1).all()


def test_unknown_schedule_raises() -> None:
    with pytest.raises(ValueError, match="unknown schedule"):
        NoiseSchedule.create("quadratic", 100)


@pytest.mark.parametrize("T", [1, 0, -5])
def test_too_few_steps_raises(T: int) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        NoiseSchedule.create("linear", T)


def test_two_steps_is_allowed() -> None:
    sched = NoiseSchedule.create("linear", 2)
    np.testing.assert_allclose(sched.betas.numpy(), [1e-4, 0.02], rtol=0, atol=1e-15)
