"""Reverse-process samplers: timestep pairs, the DDPM and DDIM step rules (against diffusers and closed forms), and the
`sample` loop (determinism, per-sample seeding, exact-eps oracle)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ddpm.common.errors import UserError
from ddpm.common.seeding import sample_seed
from ddpm.diffusion.sampler import PerSampleNoise, ddim_step, ddpm_step, sample, timestep_pairs
from ddpm.diffusion.sampling import SamplingConfig
from ddpm.diffusion.schedule import NoiseSchedule

diffusers = pytest.importorskip("diffusers")

DIFFUSERS_NAME = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
NULL = 3


# ---------------------------------------------------------------------------------------------------------------
# seeds and per-sample noise
# ---------------------------------------------------------------------------------------------------------------


def test_sample_seed_is_deterministic_distinct_and_in_range() -> None:
    seeds = {(s, i): sample_seed(s, i) for s in range(3) for i in range(50)}
    assert sample_seed(1, 7) == seeds[(1, 7)]
    assert len(set(seeds.values())) == len(seeds)
    assert all(isinstance(v, int) and 0 <= v < 2**63 for v in seeds.values())


def test_per_sample_noise_does_not_depend_on_batching() -> None:
    whole = PerSampleNoise(11, range(4))
    first, rest = PerSampleNoise(11, [0]), PerSampleNoise(11, [1, 2, 3])
    for _ in range(3):  # successive draws too
        a = whole.randn((2, 3, 3))
        b = torch.cat([first.randn((2, 3, 3)), rest.randn((2, 3, 3))])
        assert a.shape == (4, 2, 3, 3)
        assert torch.equal(a, b)
    other = PerSampleNoise(12, range(4)).randn((2, 3, 3))
    fresh = PerSampleNoise(11, range(4)).randn((2, 3, 3))
    assert not torch.isclose(other, fresh).any()
    assert not torch.isclose(fresh[0], fresh[1]).any()  # images within a batch get different noise


# ---------------------------------------------------------------------------------------------------------------
# timestep_pairs
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [10, 1000])
def test_timestep_pairs_full(T: int) -> None:
    pairs = timestep_pairs(T, T)
    assert pairs == [(t, t - 1) for t in range(T - 1, -1, -1)]


@pytest.mark.parametrize("T", [7, 20, 100])
def test_timestep_pairs_structure_for_every_N(T: int) -> None:
    for n in range(1, T + 1):
        pairs = timestep_pairs(T, n)
        assert len(pairs) == n
        ts = [t for t, _ in pairs]
        assert ts[0] == T - 1
        assert all(a > b for a, b in zip(ts, ts[1:]))  # strictly decreasing
        assert all(0 <= t < T for t in ts)
        assert [s for _, s in pairs] == ts[1:] + [-1]  # chained, ending at the clean sample


def test_timestep_pairs_single_step() -> None:
    assert timestep_pairs(1000, 1) == [(999, -1)]


def test_timestep_pairs_floor_spacing_when_N_does_not_divide_T() -> None:
    """t_k = floor(T (N - k) / N) - 1; worked by hand for T = 10, N = 4: floor(10, 7.5, 5, 2.5) - 1 = 9, 6, 4, 1."""
    assert timestep_pairs(10, 4) == [(9, 6), (6, 4), (4, 1), (1, -1)]
    T = 1000
    for n in (3, 7, 300, 999):
        ts = [t for t, _ in timestep_pairs(T, n)]
        assert ts == [math.floor(T * (n - k) / n) - 1 for k in range(n)]


@pytest.mark.parametrize("n", [1, 4, 10, 50, 250, 1000])
def test_timestep_pairs_match_diffusers_trailing(n: int) -> None:
    """For N dividing T, "trailing" spacing is unambiguous: compare with diffusers."""
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    ref.set_timesteps(n)
    assert [t for t, _ in timestep_pairs(1000, n)] == ref.timesteps.tolist()


@pytest.mark.parametrize("n", [0, -1, 1001])
def test_timestep_pairs_out_of_range(n: int) -> None:
    with pytest.raises(ValueError, match="steps must be between"):
        timestep_pairs(1000, n)


# ---------------------------------------------------------------------------------------------------------------
# ddpm_step
# ---------------------------------------------------------------------------------------------------------------


def _x0_hat(x_t: torch.Tensor, eps: torch.Tensor, ab: float, clip: bool) -> torch.Tensor:
    x0 = (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    return x0.clamp(-1, 1) if clip else x0


def _step_inputs(seed: int, shape=(2, 3, 4, 4), scale: float = 1.5):
    gen = torch.Generator().manual_seed(seed)
    x_t = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    eps = torch.randn(shape, generator=gen, dtype=torch.float64)
    z = torch.randn(shape, generator=gen, dtype=torch.float64)
    return x_t, eps, z


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddpm_step_unit_stride_uses_schedule_posterior(name: str, clip: bool) -> None:
    sched = NoiseSchedule.create(name, 1000)
    for t in [1, 2, 10, 300, 700, 998, 999]:
        x_t, eps, z = _step_inputs(t)
        ab = sched.alpha_bar[t].item()
        x0 = _x0_hat(x_t, eps, ab, clip)
        mean = sched.posterior_mean_coef_x0[t].item() * x0 + sched.posterior_mean_coef_xt[t].item() * x_t
        for variance, var in (("beta_tilde", sched.posterior_variance[t].item()), ("beta", sched.betas[t].item())):
            out, x0_out = ddpm_step(sched, x_t, eps, t, t - 1, z, variance=variance, clip=clip)
            torch.testing.assert_close(x0_out, x0, rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(out, mean + math.sqrt(var) * z, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("clip", [False, True])
def test_ddpm_last_step_returns_x0_hat_without_noise(clip: bool) -> None:
    sched = NoiseSchedule.create("linear", 100)
    x_t, eps, z = _step_inputs(0)
    ab = sched.alpha_bar[0].item()
    out, x0 = ddpm_step(sched, x_t, eps, 0, -1, z, clip=clip)
    torch.testing.assert_close(x0, _x0_hat(x_t, eps, ab, clip), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out, x0, rtol=1e-9, atol=1e-9)
    out_none, _ = ddpm_step(sched, x_t, eps, 0, -1, None, clip=clip)  # no noise needed on the final step
    torch.testing.assert_close(out_none, out, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddpm_strided_step_is_gaussian_conditioning(name: str) -> None:
    """For a pair (t, s) the step is q(x_s | x_t, x0_hat) of the marginals x_s | x_0 ~ N(sqrt(ab_s) x_0, 1 - ab_s),
    x_t | x_s ~ N(sqrt(ab_t / ab_s) x_s, 1 - ab_t / ab_s); mean and variance by Gaussian conditioning."""
    sched = NoiseSchedule.create(name, 1000)
    abar = sched.alpha_bar.tolist()
    for t, s in [(999, 979), (999, 0), (500, 250), (400, 399), (37, 3), (20, 0)]:
        x_t, eps, _ = _step_inputs(t + s)
        ab_t, ab_s = abar[t], abar[s]
        x0 = _x0_hat(x_t, eps, ab_t, clip=False)
        a = ab_t / ab_s
        c11 = 1 - ab_s
        c12 = math.sqrt(a) * c11
        c22 = a * c11 + (1 - a)
        mean = math.sqrt(ab_s) * x0 + c12 / c22 * (x_t - math.sqrt(a) * math.sqrt(ab_s) * x0)
        cond_var = c11 - c12**2 / c22
        zeros, ones = torch.zeros_like(x_t), torch.ones_like(x_t)
        m, _ = ddpm_step(sched, x_t, eps, t, s, zeros, variance="beta_tilde", clip=False)
        torch.testing.assert_close(m, mean, rtol=1e-8, atol=1e-8)
        shifted, _ = ddpm_step(sched, x_t, eps, t, s, ones, variance="beta_tilde", clip=False)
        torch.testing.assert_close(shifted - m, ones * math.sqrt(cond_var), rtol=1e-8, atol=1e-10)
        shifted, _ = ddpm_step(sched, x_t, eps, t, s, ones, variance="beta", clip=False)
        torch.testing.assert_close(shifted - m, ones * math.sqrt(1 - a), rtol=1e-8, atol=1e-10)


def test_ddpm_step_unknown_variance_raises() -> None:
    sched = NoiseSchedule.create("linear", 10)
    x_t, eps, z = _step_inputs(0)
    with pytest.raises(ValueError, match="unknown variance"):
        ddpm_step(sched, x_t, eps, 5, 4, z, variance="learned")


def _float64(ref, betas: torch.Tensor):
    """diffusers keeps its schedule in float32, whose rounding alone moves a step by ~1e-4 (1 - alpha_bar near t = 0;
    the capped cosine beta 0.999 is stored as 0.99900001). Run diffusers' step logic in float64 on the same betas
    instead; the betas themselves are compared with diffusers' to 1e-6 in test_schedule.py."""
    torch.testing.assert_close(betas, ref.betas.double(), rtol=0, atol=1e-6)
    ref.betas = betas.clone()
    ref.alphas = 1.0 - ref.betas
    ref.alphas_cumprod = torch.cumprod(ref.alphas, dim=0)
    ref.one = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(ref, "final_alpha_cumprod"):
        ref.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return ref


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddpm_step_matches_diffusers(name: str, variance_type: str) -> None:
    T = 1000
    variance = {"fixed_small": "beta_tilde", "fixed_large": "beta"}[variance_type]
    sched = NoiseSchedule.create(name, T)
    ref = _float64(
        diffusers.DDPMScheduler(
            num_train_timesteps=T, beta_schedule=DIFFUSERS_NAME[name], variance_type=variance_type, clip_sample=True
        ),
        sched.betas,
    )
    clipped_somewhere = False
    for t in [0, 1, 2, 5, 50, 250, 500, 750, 990, 998, 999]:
        gen = torch.Generator().manual_seed(100 + t)
        x_t = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64) * 1.5
        eps = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
        expected = ref.step(eps, t, x_t, generator=torch.Generator().manual_seed(t))
        # the noise diffusers drew
        z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        out, x0 = ddpm_step(sched, x_t, eps, t, t - 1, z, variance=variance, clip=True)
        torch.testing.assert_close(x0, expected.pred_original_sample, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(out, expected.prev_sample, rtol=1e-9, atol=1e-9)
        unclipped, _ = ddpm_step(sched, x_t, eps, t, t - 1, z, variance=variance, clip=False)
        clipped_somewhere |= not torch.allclose(unclipped, out)
    assert clipped_somewhere  # clipping x0_hat was exercised


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddpm_strided_steps_match_diffusers(name: str) -> None:
    T, n = 1000, 50
    pairs = timestep_pairs(T, n)
    sched = NoiseSchedule.create(name, T)
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=DIFFUSERS_NAME[name], clip_sample=True)
    ref = _float64(ref, sched.betas)
    ref.set_timesteps(timesteps=[t for t, _ in pairs])
    for k, (t, s) in enumerate(pairs):
        assert int(ref.previous_timestep(t)) == s
        gen = torch.Generator().manual_seed(k)
        x_t = torch.randn(1, 2, 3, 3, generator=gen, dtype=torch.float64) * 1.5
        eps = torch.randn(1, 2, 3, 3, generator=gen, dtype=torch.float64)
        expected = ref.step(eps, t, x_t, generator=torch.Generator().manual_seed(1000 + k))
        z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(1000 + k), dtype=torch.float64)
        out, x0 = ddpm_step(sched, x_t, eps, t, s, z, variance="beta_tilde", clip=True)
        torch.testing.assert_close(x0, expected.pred_original_sample, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(out, expected.prev_sample, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_ddpm_chain_recovers_gaussian_data_variance(variance: str) -> None:
    """End to end: with data x_0 ~ N(0, 0.5^2) and its exact eps predictor E[eps | x_t], T = 1000 ancestral steps
    from N(0, 1) give samples with mean 0 and variance 0.25 (up to O(1/T) discretisation and sampling error)."""
    T, n, sd = 1000, 20000, 0.5  # n below torch's intra-op parallel threshold: fast on 2 cores
    sched = NoiseSchedule.create("linear", T)
    abar = sched.alpha_bar.tolist()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, dtype=torch.float64, generator=gen)
    for t, s in timestep_pairs(T, T):
        ab = abar[t]
        eps = math.sqrt(1 - ab) * x / (ab * sd**2 + 1 - ab)
        z = torch.randn(n, dtype=torch.float64, generator=gen)
        x, _ = ddpm_step(sched, x, eps, t, s, z, variance=variance, clip=False)
    assert abs(x.mean().item()) < 5 * sd / math.sqrt(n)
    assert x.var().item() == pytest.approx(sd**2, abs=0.015)


# ---------------------------------------------------------------------------------------------------------------
# ddim_step
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddim_step_closed_form(name: str) -> None:
    """eta = 0: x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s) eps (Song et al. eq. 12), for arbitrary pairs."""
    sched = NoiseSchedule.create(name, 1000)
    abar = sched.alpha_bar.tolist()
    for t, s in [(999, 979), (999, -1), (640, 333), (10, 9), (5, -1)]:
        x_t, eps, _ = _step_inputs(t)
        ab_t, ab_s = abar[t], (abar[s] if s >= 0 else 1.0)
        x0 = _x0_hat(x_t, eps, ab_t, clip=False)
        out, x0_out = ddim_step(sched, x_t, eps, t, s, None, eta=0.0, clip=False)
        torch.testing.assert_close(x0_out, x0, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(out, math.sqrt(ab_s) * x0 + math.sqrt(1 - ab_s) * eps, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddim_step_with_exact_eps_stays_on_the_marginal(name: str) -> None:
    """If x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) e and the model returns e, eta = 0 gives
    x_s = sqrt(ab_s) x0 + sqrt(1 - ab_s) e."""
    sched = NoiseSchedule.create(name, 1000)
    abar = sched.alpha_bar.tolist()
    gen = torch.Generator().manual_seed(3)
    x0 = torch.rand(2, 3, 4, 4, generator=gen, dtype=torch.float64) * 1.8 - 0.9
    e = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    for t, s in [(999, 979), (500, 100), (30, -1)]:
        x_t = math.sqrt(abar[t]) * x0 + math.sqrt(1 - abar[t]) * e
        ab_s = abar[s] if s >= 0 else 1.0
        out, x0_hat = ddim_step(sched, x_t, e, t, s, None, eta=0.0, clip=True)
        torch.testing.assert_close(x0_hat, x0, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(out, math.sqrt(ab_s) * x0 + math.sqrt(1 - ab_s) * e, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddim_step_matches_diffusers(name: str, clip: bool, eta: float) -> None:
    """Our step re-derives eps from the clipped x0_hat, i.e. diffusers' use_clipped_model_output=True.
    With N | T, diffusers' prev_timestep = t - T // N equals our t_prev under trailing spacing."""
    T, n = 1000, 50
    sched = NoiseSchedule.create(name, T)
    ref = _float64(
        diffusers.DDIMScheduler(
            num_train_timesteps=T,
            beta_schedule=DIFFUSERS_NAME[name],
            clip_sample=clip,
            set_alpha_to_one=True,
            timestep_spacing="trailing",
        ),
        sched.betas,
    )
    ref.set_timesteps(n)
    pairs = timestep_pairs(T, n)
    assert [t for t, _ in pairs] == ref.timesteps.tolist()
    for k, (t, s) in enumerate(pairs):
        assert t - T // n == s
        gen = torch.Generator().manual_seed(k)
        x_t = torch.randn(1, 2, 3, 3, generator=gen, dtype=torch.float64) * 1.5
        eps = torch.randn(1, 2, 3, 3, generator=gen, dtype=torch.float64)
        z = torch.randn(1, 2, 3, 3, generator=gen, dtype=torch.float64)
        expected = ref.step(eps, t, x_t, eta=eta, use_clipped_model_output=True, variance_noise=z if eta > 0 else None)
        out, x0 = ddim_step(sched, x_t, eps, t, s, z, eta=eta, clip=clip)
        torch.testing.assert_close(x0, expected.pred_original_sample, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(out, expected.prev_sample, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddim_eta1_equals_ddpm_beta_tilde(name: str, clip: bool) -> None:
    """With eta = 1 the DDIM step is the DDPM posterior step with beta_tilde (Song et al. sec. 4.1), strided or not."""
    sched = NoiseSchedule.create(name, 1000)
    for t, s in [(999, 998), (999, 979), (600, 200), (1, 0), (19, -1)]:
        x_t, eps, z = _step_inputs(t + s)
        a, a0 = ddim_step(sched, x_t, eps, t, s, z, eta=1.0, clip=clip)
        b, b0 = ddpm_step(sched, x_t, eps, t, s, z, variance="beta_tilde", clip=clip)
        torch.testing.assert_close(a0, b0, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-8)


# ---------------------------------------------------------------------------------------------------------------
# the sample loop
# ---------------------------------------------------------------------------------------------------------------

SHAPE = (2, 3, 3)


def toy_model(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Deterministic, elementwise per sample, depends on x, t and the class."""
    cf = c.to(x.dtype).view(-1, 1, 1, 1)
    tf = t.to(x.dtype).view(-1, 1, 1, 1)
    return 0.6 * torch.tanh(x) + 0.1 * cf - 0.002 * tf * (cf - 1)


def _sample(model, sched, cond, noise, *, clip=True, callback=None, **options):
    """sample() with a SamplingConfig of `options`; guidance 1 (the plain conditional model) unless given."""
    return sample(model, sched, cond, SHAPE, noise, SamplingConfig(**{"guidance": 1.0, **options}), null_id=NULL,
                  clip=clip, callback=callback)


def _run(seed, indices, cond, sched, **kw):
    return _sample(toy_model, sched, cond, PerSampleNoise(seed, indices), **kw)


SAMPLER_KW = [
    dict(sampler="ddpm"),
    dict(sampler="ddpm", variance="beta", steps=7, guidance=3.0),
    dict(sampler="ddim", steps=5),
    dict(sampler="ddim", steps=10, eta=0.5, guidance=2.0),
]


@pytest.mark.parametrize("kw", SAMPLER_KW)
def test_sample_is_deterministic_and_seed_dependent(kw) -> None:
    sched = NoiseSchedule.create("linear", 20)
    cond = torch.tensor([0, 1, 2, 1])
    a = _run(5, range(4), cond, sched, **kw)
    b = _run(5, range(4), cond, sched, **kw)
    c = _run(6, range(4), cond, sched, **kw)
    assert a.shape == (4, *SHAPE) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.isclose(a, c).all(dim=(1, 2, 3)).any()  # every image changes with the seed
    assert a.min() >= -1 and a.max() <= 1


@pytest.mark.parametrize("kw", SAMPLER_KW)
def test_sample_per_image_seeding_independent_of_batching(kw) -> None:
    sched = NoiseSchedule.create("cosine", 20)
    cond = torch.tensor([2, 0, 1, 2])
    whole = _run(9, range(4), cond, sched, **kw)
    head = _run(9, [0], cond[:1], sched, **kw)
    tail = _run(9, [1, 2, 3], cond[1:], sched, **kw)
    assert torch.equal(torch.cat([head, tail]), whole)  # bitwise: image i depends on (seed, i) only
    assert not torch.isclose(whole[0], whole[3]).all()  # same class, different index: different images


def test_sample_guidance_zero_equals_null_condition() -> None:
    sched = NoiseSchedule.create("linear", 20)
    cond = torch.tensor([0, 1, 2])
    a = _run(1, range(3), cond, sched, sampler="ddim", steps=6, guidance=0.0)
    b = _run(1, range(3), torch.full_like(cond, NULL), sched, sampler="ddim", steps=6, guidance=1.0)
    c = _run(1, range(3), cond, sched, sampler="ddim", steps=6, guidance=1.0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("sampler,T,default_steps", [("ddpm", 100, 50), ("ddim", 100, 50), ("ddpm", 20, 20)])
def test_sample_default_steps_and_callback_order(sampler: str, T: int, default_steps: int) -> None:
    """steps None: the sampler's default (50 for ddpm and ddim), at most T."""
    sched = NoiseSchedule.create("linear", T)
    seen = []
    _run(0, range(2), torch.tensor([0, 1]), sched, sampler=sampler, callback=lambda t, x, x0: seen.append(t))
    assert seen == [t for t, _ in timestep_pairs(T, default_steps)]


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sample_output_is_clamped_even_without_clipping(sampler: str) -> None:
    """clip=False leaves x0_hat unclipped inside the loop, but the returned images are still in [-1, 1]."""
    sched = NoiseSchedule.create("linear", 20)
    seen = []
    out = _sample(
        lambda x, t, c: -2.0 * x, sched, torch.tensor([0, 1]), PerSampleNoise(0, range(2)), sampler=sampler,
        steps=5, clip=False, callback=lambda t, x, x0: seen.append(x.clone()),
    )
    assert seen[-1].abs().max() > 1  # the unclamped final iterate leaves the data range...
    torch.testing.assert_close(out, seen[-1].clamp(-1, 1), rtol=0, atol=0)  # ...and the output is its clamp


def test_sample_unknown_sampler_raises() -> None:
    sched = NoiseSchedule.create("linear", 10)
    with pytest.raises(UserError, match="unknown sampler"):
        _run(0, [0], torch.tensor([0]), sched, sampler="euler")


def _oracle(sched: NoiseSchedule, x0_star: torch.Tensor):
    """The exact eps for data concentrated at the single point x0_star."""
    abar = torch.cat([sched.alpha_bar, torch.ones(1, dtype=torch.float64)])

    def model(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        ab = abar[t].view(-1, 1, 1, 1)
        return ((x.double() - ab.sqrt() * x0_star.double()) / (1 - ab).sqrt()).to(x.dtype)

    return model


@pytest.mark.parametrize(
    "name,T,kw",
    [
        ("linear", 1000, dict(sampler="ddim")),
        ("linear", 1000, dict(sampler="ddim", steps=7)),
        ("linear", 1000, dict(sampler="ddim", steps=20, eta=1.0)),
        ("linear", 1000, dict(sampler="ddpm", steps=40)),
        ("cosine", 100, dict(sampler="ddpm")),
        ("cosine", 100, dict(sampler="ddpm", variance="beta")),
        ("cosine", 100, dict(sampler="ddim", steps=10)),
    ],
)
def test_sample_exact_eps_oracle_returns_the_data_point(name: str, T: int, kw) -> None:
    sched = NoiseSchedule.create(name, T)
    gen = torch.Generator().manual_seed(0)
    x0_star = torch.rand(SHAPE, generator=gen) * 1.6 - 0.8
    model = _oracle(sched, x0_star)
    out = _sample(model, sched, torch.tensor([0, 1, 2]), PerSampleNoise(4, range(3)), **kw)
    torch.testing.assert_close(out, x0_star.expand(3, *SHAPE), rtol=0, atol=1e-4)


def test_ddim_oracle_trajectory_keeps_the_initial_noise_direction() -> None:
    """DDIM eta=0 with the exact eps: every x_s = sqrt(ab_s) x0* + sqrt(1 - ab_s) e, e fixed by x_T."""
    T = 1000
    sched = NoiseSchedule.create("linear", T)
    abar = sched.alpha_bar.tolist()
    x0_star = torch.rand(SHAPE, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8
    x_T = PerSampleNoise(8, range(2)).randn(SHAPE).double()  # the sampler's first draw
    e = (x_T - math.sqrt(abar[T - 1]) * x0_star) / math.sqrt(1 - abar[T - 1])
    pairs = timestep_pairs(T, 25)
    seen = []
    _sample(
        _oracle(sched, x0_star), sched, torch.tensor([0, 1]), PerSampleNoise(8, range(2)),
        sampler="ddim", steps=25, callback=lambda t, x, x0: seen.append((t, x.clone(), x0.clone())),
    )
    assert [t for t, _, _ in seen] == [t for t, _ in pairs]
    for (t, x, x0), (_, s) in zip(seen, pairs):
        ab_s = abar[s] if s >= 0 else 1.0
        torch.testing.assert_close(x0.double(), x0_star.double().expand(2, *SHAPE), rtol=0, atol=1e-4)
        expected = math.sqrt(ab_s) * x0_star.double() + math.sqrt(1 - ab_s) * e
        torch.testing.assert_close(x.double(), expected, rtol=0, atol=1e-4)
