"""DPM-Solver++(2M) (`dpm++2m`) and its SDE form (`dpm++2m-sde`): the step rules against diffusers'
DPMSolverMultistepScheduler step for step, closed forms (a single data point, Gaussian data whose probability-flow ODE
is solved exactly), convergence order, and the `sample` loop (determinism, per-sample seeds, guidance in one batched
forward)."""

from __future__ import annotations

import math

import pytest
import torch

from ddpm.diffusion.sampler import (
    Denoised,
    PerSampleNoise,
    ddim_step,
    ddpm_step,
    dpmpp_2m_sde_step,
    dpmpp_2m_step,
    log_snr_half,
    sample,
    timestep_pairs,
)
from ddpm.diffusion.sampling import DEFAULT_STEPS, SamplingConfig
from ddpm.diffusion.schedule import NoiseSchedule

diffusers = pytest.importorskip("diffusers")

DIFFUSERS_NAME = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
NULL = 3
SHAPE = (2, 3, 3)


def dummy_eps(x: torch.Tensor, t: int) -> torch.Tensor:
    """A deterministic stand-in for a network: bounded, nonlinear in x, varying with t; x0_hat leaves [-1, 1]."""
    return 0.8 * torch.tanh(1.3 * x) + 0.3 * math.sin(t / 97.0) + 0.2 * torch.cos(2 * x)


# ---------------------------------------------------------------------------------------------------------------
# the step rule against diffusers
# ---------------------------------------------------------------------------------------------------------------


def _reference(name: str, sched: NoiseSchedule, ts: list[int], clip: bool, algorithm: str = "dpmsolver++"):
    """diffusers' DPM-Solver++(2M) on our float64 schedule and our timesteps, final sigma 0 (t_prev = -1 is clean).
    thresholding with sample_max_value = 1 clamps its threshold s to exactly 1, i.e. clips x0_hat to [-1, 1]."""
    ref = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=sched.num_steps, beta_schedule=DIFFUSERS_NAME[name], algorithm_type=algorithm,
        solver_order=2, solver_type="midpoint", prediction_type="epsilon", lower_order_final=True,
        final_sigmas_type="zero", thresholding=clip, sample_max_value=1.0,
    )
    torch.testing.assert_close(sched.betas, ref.betas.double(), rtol=0, atol=1e-6)  # the same schedule...
    ref.alphas_cumprod = sched.alpha_bar.clone()  # ...in float64
    ref.set_timesteps(timesteps=ts)
    assert ref.timesteps.tolist() == ts
    ab = sched.alpha_bar[ts]
    ref.sigmas = torch.cat([((1 - ab) / ab).sqrt(), torch.zeros(1, dtype=torch.float64)])  # its float32 copy, in float64
    return ref


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("n", [1, 10, 20, 50, 100])
def test_timesteps_are_diffusers_dpm_solver_trailing(n: int) -> None:
    """For N dividing T, diffusers' own "trailing" DPM-Solver timesteps are ours, and its last sigma (final_sigmas_type
    "zero") is the clean sample, our t_prev = -1."""
    ref = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                                timestep_spacing="trailing", final_sigmas_type="zero")
    ref.set_timesteps(n)
    pairs = timestep_pairs(1000, n)
    assert ref.timesteps.tolist() == [t for t, _ in pairs]
    assert len(ref.sigmas) == n + 1 and ref.sigmas[-1] == 0 and pairs[-1][1] == -1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 on diffusers' tensor -> array
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("n", [1, 2, 7, 10, 20, 50])
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_dpmpp_2m_matches_diffusers_step_for_step(name: str, n: int, clip: bool) -> None:
    """Each step gets the same x_t in both (so diffusers' internal float32 cast of x_t costs ~1e-7, not compounded);
    the multistep memory (previous x0_hat) is each implementation's own."""
    T = 1000
    sched = NoiseSchedule.create(name, T)
    pairs = timestep_pairs(T, n)
    ref = _reference(name, sched, [t for t, _ in pairs], clip)
    x = torch.randn(2, 1, 5, 5, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    previous, clipped = None, False
    for t, s in pairs:
        eps = dummy_eps(x, t)
        expected = ref.step(eps, t, x).prev_sample
        out, x0 = dpmpp_2m_step(sched, x, eps, t, s, previous, clip=clip)
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
        clipped |= bool((x0.abs() == 1).any())
        previous, x = Denoised(t, x0), out
    assert clipped == clip  # clipping was exercised exactly when asked for


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("n", [1, 2, 10, 20])
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_dpmpp_2m_sde_matches_diffusers_step_for_step(name: str, n: int, clip: bool) -> None:
    """diffusers' "sde-dpmsolver++" (midpoint), given our noise z as its variance_noise."""
    T = 1000
    sched = NoiseSchedule.create(name, T)
    pairs = timestep_pairs(T, n)
    ref = _reference(name, sched, [t for t, _ in pairs], clip, algorithm="sde-dpmsolver++")
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(2, 1, 5, 5, generator=gen, dtype=torch.float64)
    previous = None
    for t, s in pairs:
        eps, z = dummy_eps(x, t), torch.randn(x.shape, generator=gen, dtype=torch.float64)
        expected = ref.step(eps, t, x, variance_noise=z).prev_sample
        out, x0 = dpmpp_2m_sde_step(sched, x, eps, t, s, previous, z, clip=clip)
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
        previous, x = Denoised(t, x0), out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_dpmpp_2m_whole_trajectory_matches_diffusers(name: str) -> None:
    """Both loops run on their own from the same x_T with the same eps function; diffusers computes each update in
    float32, so the agreement is ~1e-6 rather than 1e-12."""
    T, n = 1000, 20
    sched = NoiseSchedule.create(name, T)
    pairs = timestep_pairs(T, n)
    ref = _reference(name, sched, [t for t, _ in pairs], clip=False)
    x = y = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    previous = None
    for t, s in pairs:
        y = ref.step(dummy_eps(y, t), t, y).prev_sample
        x, x0 = dpmpp_2m_step(sched, x, dummy_eps(x, t), t, s, previous, clip=False)
        previous = Denoised(t, x0)
    torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    assert x.abs().max() > 1  # the comparison is not on clipped values


# ---------------------------------------------------------------------------------------------------------------
# the step rule's closed forms
# ---------------------------------------------------------------------------------------------------------------


def test_log_snr_half_closed_form() -> None:
    for name in ("linear", "cosine"):
        sched = NoiseSchedule.create(name, 1000)
        for t in (0, 1, 500, 998, 999):
            ab = sched.alpha_bar[t].item()
            assert log_snr_half(sched, t) == pytest.approx(math.log(math.sqrt(ab) / math.sqrt(1 - ab)), rel=1e-12)
    cosine = NoiseSchedule.create("cosine", 1000)
    assert cosine.alpha_bar[999].item() < 1e-8  # the cosine schedule's end: alpha_bar ~ 0 ...
    assert -11 < log_snr_half(cosine, 999) < -9  # ... but lambda stays finite


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_dpmpp_2m_first_step_is_ddim(name: str, clip: bool) -> None:
    """Without a previous x0_hat the update is first order: DPM-Solver++(1) = DDIM with eta 0."""
    sched = NoiseSchedule.create(name, 1000)
    for t, s in [(999, 949), (999, 0), (500, 450), (3, 0)]:
        x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(t), dtype=torch.float64) * 1.5
        eps = dummy_eps(x, t)
        a, a0 = dpmpp_2m_step(sched, x, eps, t, s, None, clip=clip)
        b, b0 = ddim_step(sched, x, eps, t, s, None, eta=0.0, clip=clip)
        torch.testing.assert_close(a0, b0, rtol=0, atol=1e-12)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_dpmpp_2m_sde_first_step_is_ddpm_beta_tilde(name: str, clip: bool) -> None:
    """(sigma_s / sigma_t) e^{-h} = sqrt(ab_t / ab_s) (1 - ab_s) / (1 - ab_t) and sigma_s^2 (1 - e^{-2h}) = beta_tilde:
    without a previous x0_hat the SDE step is the DDPM posterior step."""
    sched = NoiseSchedule.create(name, 1000)
    for t, s in [(999, 949), (999, 0), (500, 450), (3, 0), (10, -1)]:
        gen = torch.Generator().manual_seed(t)
        x = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64) * 1.5
        z = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
        eps = dummy_eps(x, t)
        a, a0 = dpmpp_2m_sde_step(sched, x, eps, t, s, None, z, clip=clip)
        b, b0 = ddpm_step(sched, x, eps, t, s, z, variance="beta_tilde", clip=clip)
        torch.testing.assert_close(a0, b0, rtol=0, atol=1e-12)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_dpmpp_2m_second_order_closed_form() -> None:
    """Lu et al. 2022 Algorithm 2 written out with alpha, sigma and lambda, for one hand-picked step."""
    sched = NoiseSchedule.create("linear", 1000)
    ab = sched.alpha_bar
    u, t, s = 899, 799, 599
    a = {k: ab[k].sqrt().item() for k in (u, t, s)}
    sg = {k: (1 - ab[k]).sqrt().item() for k in (u, t, s)}
    lam = {k: math.log(a[k] / sg[k]) for k in (u, t, s)}
    h, h_last = lam[s] - lam[t], lam[t] - lam[u]
    r = h_last / h
    x = torch.randn(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps = dummy_eps(x, t)
    x0 = (x - sg[t] * eps) / a[t]
    x0_u = torch.randn(4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_u
    expected = sg[s] / sg[t] * x - a[s] * (math.exp(-h) - 1) * d
    out, x0_out = dpmpp_2m_step(sched, x, eps, t, s, Denoised(u, x0_u), clip=False)
    torch.testing.assert_close(x0_out, x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    # the previous x0_hat matters: a second-order step is not the first-order one
    assert not torch.allclose(out, dpmpp_2m_step(sched, x, eps, t, s, None, clip=False)[0])
    # the SDE form: (sigma_s / sigma_t) e^{-h} x_t + alpha_s (1 - e^{-2h}) D + sigma_s sqrt(1 - e^{-2h}) z
    z = torch.randn(4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = (sg[s] / sg[t] * math.exp(-h) * x + a[s] * (1 - math.exp(-2 * h)) * d
                + sg[s] * math.sqrt(1 - math.exp(-2 * h)) * z)
    out, _ = dpmpp_2m_sde_step(sched, x, eps, t, s, Denoised(u, x0_u), z, clip=False)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sde", [False, True])
@pytest.mark.parametrize("clip", [False, True])
def test_dpmpp_2m_final_step_returns_x0_hat(clip: bool, sde: bool) -> None:
    sched = NoiseSchedule.create("cosine", 1000)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    eps = dummy_eps(x, 49)
    previous = Denoised(99, torch.zeros_like(x))
    if sde:  # no noise on the step to the clean sample
        out, x0 = dpmpp_2m_sde_step(sched, x, eps, 49, -1, previous, None, clip=clip)
    else:
        out, x0 = dpmpp_2m_step(sched, x, eps, 49, -1, previous, clip=clip)
    ab = sched.alpha_bar[49].item()
    expected = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    expected = expected.clamp(-1, 1) if clip else expected
    torch.testing.assert_close(x0, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(out, x0)


# ---------------------------------------------------------------------------------------------------------------
# exact score models: a single data point, and Gaussian data
# ---------------------------------------------------------------------------------------------------------------


def _point_oracle(sched: NoiseSchedule, c: torch.Tensor):
    """The exact eps for data concentrated at c: eps = (x_t - sqrt(ab_t) c) / sqrt(1 - ab_t)."""
    abar = sched.alpha_bar

    def model(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        ab = abar[t].view(-1, *[1] * (x.ndim - 1))
        return ((x.double() - ab.sqrt() * c.double()) / (1 - ab).sqrt()).to(x.dtype)

    return model


@pytest.mark.parametrize("n", [1, 2, 3, 10, 20, 1000])
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_dpmpp_2m_point_data_exact_trajectory(name: str, n: int) -> None:
    """With the exact eps of a point mass at c, x0_hat = c at every step, and every iterate stays on
    x_s = alpha_s c + sigma_s e (e fixed by x_T): float64, any step count, to rounding."""
    T = 1000
    sched = NoiseSchedule.create(name, T)
    ab = sched.alpha_bar.tolist()
    gen = torch.Generator().manual_seed(n)
    c = torch.rand(3, 4, 4, generator=gen, dtype=torch.float64) * 1.6 - 0.8
    x = torch.randn(3, 4, 4, generator=gen, dtype=torch.float64)
    e = (x - math.sqrt(ab[T - 1]) * c) / math.sqrt(1 - ab[T - 1])
    oracle, previous = _point_oracle(sched, c), None
    for t, s in timestep_pairs(T, n):
        x, x0 = dpmpp_2m_step(sched, x, oracle(x, torch.tensor([t]), None), t, s, previous, clip=False)
        previous = Denoised(t, x0)
        torch.testing.assert_close(x0, c, rtol=0, atol=1e-9)
        ab_s = ab[s] if s >= 0 else 1.0
        torch.testing.assert_close(x, math.sqrt(ab_s) * c + math.sqrt(1 - ab_s) * e, rtol=0, atol=1e-9)
    torch.testing.assert_close(x, c, rtol=0, atol=1e-9)


@pytest.mark.parametrize("sampler", ["dpm++2m", "dpm++2m-sde"])
@pytest.mark.parametrize("name,steps", [("linear", 1), ("linear", 5), ("linear", 20), ("cosine", 2), ("cosine", 5),
                                        ("cosine", 20)])
def test_sample_dpmpp_2m_point_data_returns_the_point(name: str, steps: int, sampler: str) -> None:
    """The same through the float32 `sample` loop, with guidance (both branches are exact, so the mix is too).
    Not cosine with 1 step: x0_hat = (x_t - sigma eps) / alpha at t = T-1 divides float32 rounding by
    alpha = 5e-5 (~1e-3 off, as for DDIM); any later step recomputes x0_hat where alpha is larger."""
    sched = NoiseSchedule.create(name, 1000)
    c = torch.rand(SHAPE, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    out = sample(_point_oracle(sched, c), sched, torch.tensor([0, 1, 2]), SHAPE, PerSampleNoise(4, range(3)),
                 SamplingConfig(sampler=sampler, steps=steps, guidance=3.0), null_id=NULL)
    torch.testing.assert_close(out, c.expand(3, *SHAPE), rtol=0, atol=1e-4)


def _gaussian_run(sched: NoiseSchedule, n: int, sd: float, rule: str, x_T: torch.Tensor, stop_before_last: bool = False):
    """Run `rule` with the exact eps of data ~ N(0, sd^2 I): x_t ~ N(0, v_t), v_t = ab_t sd^2 + 1 - ab_t, and
    E[eps | x_t] = sqrt(1 - ab_t) x_t / v_t."""
    ab = sched.alpha_bar.tolist()
    pairs = timestep_pairs(sched.num_steps, n)
    x, previous = x_T, None
    for t, s in pairs[:-1] if stop_before_last else pairs:
        eps = math.sqrt(1 - ab[t]) * x / (ab[t] * sd**2 + 1 - ab[t])
        if rule == "ddim":
            x, _ = ddim_step(sched, x, eps, t, s, None, eta=0.0, clip=False)
        else:
            x, x0 = dpmpp_2m_step(sched, x, eps, t, s, previous, clip=False)
            previous = Denoised(t, x0)
    return x, pairs[-1][0]


def _flow(sched: NoiseSchedule, sd: float, x_T: torch.Tensor, t: int) -> torch.Tensor:
    """The exact probability-flow ODE solution for Gaussian data: x_t / sqrt(v_t) is constant along the flow
    (t = -1: v = sd^2)."""
    ab = sched.alpha_bar.tolist()
    v = lambda k: (ab[k] * sd**2 + 1 - ab[k]) if k >= 0 else sd**2  # noqa: E731
    return x_T * math.sqrt(v(t) / v(sched.num_steps - 1))


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_dpmpp_2m_gaussian_data_variance_and_convergence(name: str) -> None:
    """Data N(0, 0.5^2): 20 steps land the sample variance near 0.25; the error against the exact ODE solution
    shrinks as steps grow and is smaller than DDIM's at every step count."""
    sd, n_samples = 0.5, 20000
    sched = NoiseSchedule.create(name, 1000)
    x_T = torch.randn(n_samples, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x20, _ = _gaussian_run(sched, 20, sd, "dpm++2m", x_T)
    assert x20.var().item() == pytest.approx(sd**2, rel=0.10)
    assert abs(x20.mean().item()) < 5 * sd / math.sqrt(n_samples)
    errors = {}
    for n in (10, 20, 100, 1000):
        exact = _flow(sched, sd, x_T, -1)
        errors[n] = {rule: (_gaussian_run(sched, n, sd, rule, x_T)[0] - exact).abs().max().item() / sd
                     for rule in ("ddim", "dpm++2m")}
        assert errors[n]["dpm++2m"] < errors[n]["ddim"]
    dpm = [errors[n]["dpm++2m"] for n in (10, 20, 100, 1000)]
    assert dpm[0] > dpm[1] > dpm[2] > dpm[3]
    assert errors[100]["dpm++2m"] < 0.01 and errors[1000]["dpm++2m"] < 1e-3


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_dpmpp_2m_sde_gaussian_data_variance(name: str) -> None:
    """The SDE form with the exact eps of N(0, 0.5^2) data: 20 and 100 steps land the variance near 0.25, and 20 steps
    land it closer than 20 strided DDPM steps given the same noise."""
    sd, n_samples = 0.5, 20000
    sched = NoiseSchedule.create(name, 1000)
    ab = sched.alpha_bar.tolist()
    variances = {}
    for steps in (20, 100):
        gen = torch.Generator().manual_seed(steps)
        x = y = torch.randn(n_samples, generator=gen, dtype=torch.float64)
        previous = None
        for t, s in timestep_pairs(1000, steps):
            z = torch.randn(n_samples, generator=gen, dtype=torch.float64)
            x, x0 = dpmpp_2m_sde_step(sched, x, math.sqrt(1 - ab[t]) * x / (ab[t] * sd**2 + 1 - ab[t]), t, s, previous, z,
                                      clip=False)
            previous = Denoised(t, x0)
            y, _ = ddpm_step(sched, y, math.sqrt(1 - ab[t]) * y / (ab[t] * sd**2 + 1 - ab[t]), t, s, z, clip=False)
        variances[steps] = (x.var().item(), y.var().item())
        assert abs(x.mean().item()) < 5 * sd / math.sqrt(n_samples)
    assert variances[20][0] == pytest.approx(sd**2, rel=0.10)
    assert abs(variances[20][0] - sd**2) < abs(variances[20][1] - sd**2)
    assert variances[100][0] == pytest.approx(sd**2, rel=0.06)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_dpmpp_2m_is_second_order_where_ddim_is_first(name: str) -> None:
    """Error at the last noisy step t_1 (before the final x0_hat jump) against the exact ODE solution: doubling the
    steps from 80 to 160 to 320 divides DPM-Solver++(2M)'s error by about 3 (order ~2), DDIM's by about 2."""
    sd = 0.5
    sched = NoiseSchedule.create(name, 1000)
    x_T = torch.ones(1, dtype=torch.float64)
    err = {}
    for rule in ("ddim", "dpm++2m"):
        for n in (80, 160, 320):
            x, t1 = _gaussian_run(sched, n, sd, rule, x_T, stop_before_last=True)
            err[rule, n] = abs((x / _flow(sched, sd, x_T, t1)).item() - 1)
    for n in (80, 160):
        assert err["dpm++2m", 2 * n] / err["dpm++2m", n] < 0.4
        assert 0.45 < err["ddim", 2 * n] / err["ddim", n] < 0.6


# ---------------------------------------------------------------------------------------------------------------
# the sample loop
# ---------------------------------------------------------------------------------------------------------------


def toy_model(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Deterministic, elementwise per sample, depends on x, t and the class."""
    cf = c.to(x.dtype).view(-1, 1, 1, 1)
    tf = t.to(x.dtype).view(-1, 1, 1, 1)
    return 0.6 * torch.tanh(x) + 0.1 * cf - 0.002 * tf * (cf - 1)


SOLVERS = ["dpm++2m", "dpm++2m-sde"]


def _run(seed, indices, cond, sched, model=toy_model, sampler="dpm++2m", callback=None, **kw):
    """sample() with a SamplingConfig of the keywords; guidance 1 (the plain conditional model) unless given."""
    config = SamplingConfig(**{"guidance": 1.0, "sampler": sampler, **kw})
    return sample(model, sched, cond, SHAPE, PerSampleNoise(seed, indices), config, null_id=NULL, callback=callback)


@pytest.mark.parametrize("sampler", SOLVERS)
def test_sample_dpmpp_2m_loop_equals_the_step_rule_by_hand(sampler: str) -> None:
    """The loop feeds each step the previous step's x0_hat, with guidance mixed from the model's two branches, and
    (SDE) image i's next noise draw from its own stream."""
    sched = NoiseSchedule.create("cosine", 100)
    cond, w = torch.tensor([0, 2]), 2.5
    out = _run(3, range(2), cond, sched, sampler=sampler, steps=6, guidance=w)
    noise = PerSampleNoise(3, range(2))
    x = noise.randn(SHAPE)
    previous = None
    for t, s in timestep_pairs(100, 6):
        tt = torch.full((2,), t)
        eps_c, eps_u = toy_model(x, tt, cond), toy_model(x, tt, torch.full_like(cond, NULL))
        eps = eps_u + w * (eps_c - eps_u)
        if sampler == "dpm++2m":
            x, x0 = dpmpp_2m_step(sched, x, eps, t, s, previous)
        else:
            x, x0 = dpmpp_2m_sde_step(sched, x, eps, t, s, previous, noise.randn(SHAPE) if s >= 0 else None)
        previous = Denoised(t, x0)
    torch.testing.assert_close(out, x.clamp(-1, 1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sampler", SOLVERS)
def test_sample_dpmpp_2m_guidance_is_one_batched_forward_per_step(sampler: str) -> None:
    """NFE = steps: under guidance each step is one call on the doubled batch [x; x] with classes [c; null]."""
    sched = NoiseSchedule.create("linear", 100)
    calls = []

    def counting(x, t, c):
        calls.append((x.shape[0], c.tolist()))
        return toy_model(x, t, c)

    _run(0, range(3), torch.tensor([0, 1, 2]), sched, model=counting, sampler=sampler, steps=7, guidance=3.0)
    assert calls == [(6, [0, 1, 2, NULL, NULL, NULL])] * 7
    calls.clear()
    _run(0, range(3), torch.tensor([0, 1, 2]), sched, model=counting, sampler=sampler, steps=7, guidance=1.0)
    assert calls == [(3, [0, 1, 2])] * 7


@pytest.mark.parametrize("sampler", SOLVERS)
def test_sample_dpmpp_2m_is_deterministic_and_seeded_per_image(sampler: str) -> None:
    sched = NoiseSchedule.create("cosine", 50)
    cond = torch.tensor([2, 0, 1, 2])
    kw = dict(sampler=sampler, steps=8, guidance=2.0)
    whole = _run(9, range(4), cond, sched, **kw)
    again = _run(9, range(4), cond, sched, **kw)
    head = _run(9, [0], cond[:1], sched, **kw)
    tail = _run(9, [1, 2, 3], cond[1:], sched, **kw)
    other = _run(10, range(4), cond, sched, **kw)
    assert whole.shape == (4, *SHAPE) and whole.dtype == torch.float32
    assert torch.equal(whole, again)
    assert torch.equal(torch.cat([head, tail]), whole)  # image i depends on (seed, i) only, not on the batch
    assert not torch.isclose(whole, other).all(dim=(1, 2, 3)).any()
    assert whole.min() >= -1 and whole.max() <= 1
    # eta is a DDIM setting: it changes nothing here
    torch.testing.assert_close(_run(9, range(4), cond, sched, eta=1.0, **kw), whole, rtol=0, atol=0)


def test_sample_dpmpp_2m_sde_differs_from_the_ode_form() -> None:
    """Same start x_T, same model: the SDE form's fresh noise changes the images."""
    sched = NoiseSchedule.create("cosine", 50)
    cond = torch.tensor([0, 1])
    ode = _run(2, range(2), cond, sched, sampler="dpm++2m", steps=8)
    sde = _run(2, range(2), cond, sched, sampler="dpm++2m-sde", steps=8)
    assert not torch.isclose(ode, sde).all(dim=(1, 2, 3)).any()


@pytest.mark.parametrize("sampler", SOLVERS)
def test_sample_dpmpp_2m_default_steps_and_callback(sampler: str) -> None:
    assert DEFAULT_STEPS[sampler] == 20
    sched = NoiseSchedule.create("linear", 100)
    seen = []
    _run(0, range(2), torch.tensor([0, 1]), sched, sampler=sampler, callback=lambda t, x, x0: seen.append(t))
    assert seen == [t for t, _ in timestep_pairs(100, 20)] and seen[-1] == 4  # 20 steps, the last to t_prev = -1
