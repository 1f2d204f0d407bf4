"""The statistics of bench/sampler_quality.py that choose the evaluation's sampler (issue 19): the bootstrap FID
against a fixed reference and the paired differences between two samplers' rows."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from ddpm.evaluation import metrics

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def sq():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("sampler_quality_under_test", BENCH / "sampler_quality.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def features(n: int, d: int, seed: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d**0.5  # correlated features, as Inception's are
    return (torch.randn(n, d, generator=g) @ mix) * scale + shift


def test_fid_to_fixed_reference_equals_the_metric(sq):
    """The eigvalsh form tr sqrt(R S_g R) against evaluation/metrics.py's FID (torchmetrics' sqrtm)."""
    real = features(600, 48, 0)
    fid = sq.FrechetToFixed(real)
    for fake in (features(500, 48, 1, 1.3, 0.2), features(700, 48, 2, 0.7), real[:300]):
        assert fid(fake) == pytest.approx(metrics.frechet_distance(real, fake), rel=1e-6, abs=1e-8)


def test_paired_differences_closed_forms(sq):
    """Against itself a row differs by exactly 0 with a zero std; a row whose features are all moved by c differs
    by |mu_r - mu_g - c|^2 - |mu_r - mu_g|^2 (the covariances are equal); accuracy differences are the mean of the
    per-image differences."""
    real, gen = features(400, 16, 0), features(300, 16, 1, 1.1)
    correct = (torch.arange(300) % 4 != 0).float()  # 75%
    base = {"fid": gen, "correct": correct}
    same = sq.paired_differences({"fid": real}, base, base, draws=20)
    assert same["fid"] == (pytest.approx(0.0, abs=1e-9), pytest.approx(0.0, abs=1e-9))
    assert same["accuracy"] == (0.0, 0.0)

    c = torch.full((16,), 0.3)
    better = torch.ones(300)  # 100%
    moved = sq.paired_differences({"fid": real}, base, {"fid": gen + c, "correct": better}, draws=50)
    gap = real.double().mean(0) - gen.double().mean(0)
    expected = float((gap - c.double()).square().sum() - gap.square().sum())
    assert moved["fid"][0] == pytest.approx(expected, rel=1e-6)
    assert moved["fid"][1] > 0  # the resampled means move, so the difference has a spread
    assert moved["accuracy"][0] == pytest.approx(0.25)
    # better - correct is 1 for a quarter of the images: the bootstrap std of a mean of N Bernoulli(1/4)
    assert moved["accuracy"][1] == pytest.approx(float((0.25 * 0.75 / 300) ** 0.5), rel=0.35)


def test_pairing_removes_the_shared_noise(sq):
    """Two rows drawn from the same starting noise (the second a small perturbation of the first): the paired
    difference's std is far smaller than either row's own bootstrap spread."""
    real, gen = features(500, 16, 0), features(400, 16, 1, 1.2)
    near = gen + 0.01 * features(400, 16, 2)
    paired = sq.paired_differences({"fid": real}, {"fid": gen}, {"fid": near}, draws=40)["fid"][1]
    fid = sq.FrechetToFixed(real)
    g = torch.Generator().manual_seed(3)
    alone = torch.tensor([fid(gen[torch.randint(0, 400, (400,), generator=g)]) for _ in range(40)]).std()
    assert paired < 0.1 * float(alone)
