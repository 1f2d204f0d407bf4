"""FID, KID, IS/classifier score on synthetic features and probability tables (no network): against scipy, closed
forms and direct implementations."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from ddpm.common.errors import UserError
from ddpm.evaluation.metrics import (frechet_distance, inception_score, kernel_inception_distance, kid_subset_size,
                                    per_class_accuracy)


def exact_gaussian(n: int, mu: torch.Tensor, cov: torch.Tensor, seed: int) -> torch.Tensor:
    """n samples (n, d) whose sample mean is exactly mu and unbiased sample covariance exactly cov."""
    z = torch.randn(n, len(mu), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    whiten = torch.linalg.cholesky(z.T @ z / (n - 1))  # sample cov = L L^T
    z = torch.linalg.solve_triangular(whiten, z.T, upper=False).T  # sample cov = I
    return z @ torch.linalg.cholesky(cov).T + mu


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The pytorch-fid / TTUR formula: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_matches_scipy_on_correlated_features():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 12, generator=g) @ torch.randn(12, 12, generator=g)
    b = torch.randn(250, 12, generator=g) @ torch.randn(12, 12, generator=g) + 0.5
    assert frechet_distance(a, b) == pytest.approx(scipy_fid(a.double().numpy(), b.double().numpy()), rel=1e-6)


def test_frechet_closed_form_for_gaussians():
    d = 8
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.full((d,), 0.5, dtype=torch.float64)
    var1 = torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    var2 = torch.linspace(3.0, 1.0, d, dtype=torch.float64)
    a = exact_gaussian(200, mu1, torch.diag(var1), seed=1)
    b = exact_gaussian(300, mu2, torch.diag(var2), seed=2)
    # diagonal covariances commute: Tr(S1 + S2 - 2 (S1 S2)^1/2) = sum (sqrt(v1) - sqrt(v2))^2
    expected = float(((mu1 - mu2) ** 2).sum() + ((var1.sqrt() - var2.sqrt()) ** 2).sum())
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def direct_kid(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(u, v) = (u.v / d + 1)^3, written out with loops over pairs."""
    d = x.shape[1]
    k = lambda u, v: (u @ v / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_kid_matches_direct_implementation():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(40, 6, generator=g), torch.randn(40, 6, generator=g) * 1.3 + 0.2
    mean, std = kernel_inception_distance(a, b, subsets=1, subset_size=40)  # one subset = all of each set
    assert mean == pytest.approx(direct_kid(a.double().numpy(), b.double().numpy()), rel=1e-9)
    assert std == 0.0


def test_kid_subsets_are_seeded():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(60, 5, generator=g), torch.randn(70, 5, generator=g) + 1
    first = kernel_inception_distance(a, b, subsets=20, subset_size=30, seed=7)
    assert kernel_inception_distance(a, b, subsets=20, subset_size=30, seed=7) == first
    assert kernel_inception_distance(a, b, subsets=20, subset_size=30, seed=8) != first
    assert first[1] > 0
    near, _ = kernel_inception_distance(a, a[torch.randperm(60, generator=g)], subsets=20, subset_size=30)
    assert abs(near) < first[0]


def test_kid_subsets_never_the_whole_set():
    # Asked for subsets as large as the sets (ddpm eval's 1,000 at N = 1,000), every subset would be the whole set in
    # another order and the std 0 whatever the data; with several subsets they are capped at half the smaller set.
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(40, 6, generator=g), torch.randn(30, 6, generator=g) + 0.5
    assert kid_subset_size(1000, 40, 30, subsets=10) == 15
    assert kid_subset_size(10, 40, 30, subsets=10) == 10
    assert kid_subset_size(1000, 40, 30, subsets=1) == 30
    _, std = kernel_inception_distance(a, b, subsets=10, subset_size=1000)
    assert std > 0


def test_score_on_known_probability_tables():
    k = 4
    one_hot = torch.eye(k, dtype=torch.float64).repeat(25, 1)  # every class equally often, each image certain
    assert inception_score(one_hot, splits=1)[0] == pytest.approx(k)
    uniform = torch.full((100, k), 1 / k, dtype=torch.float64)  # no image is recognisable
    assert inception_score(uniform, splits=1)[0] == pytest.approx(1.0)
    pairs = torch.tensor([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]], dtype=torch.float64).repeat(50, 1)
    assert inception_score(pairs, splits=1)[0] == pytest.approx(2.0)  # KL = log 4 - log 2
    # a general table: exp(mean_x sum_y p log(p / p(y)))
    p = torch.softmax(torch.randn(200, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64), 1)
    expected = math.exp(float((p * (p.log() - p.mean(0, keepdim=True).log())).sum(1).mean()))
    assert inception_score(p, splits=1)[0] == pytest.approx(expected, rel=1e-9)
    mean, std = inception_score(one_hot, splits=10, seed=0)
    assert inception_score(one_hot, splits=10, seed=0) == (mean, std) and 1 < mean <= k


def test_per_class_accuracy():
    wanted = torch.tensor([0, 0, 1, 1, 1, 2])
    predicted = torch.tensor([0, 1, 1, 1, 0, 2])
    acc = per_class_accuracy(predicted, wanted, num_classes=4)
    assert acc[:3] == pytest.approx([0.5, 2 / 3, 1.0]) and math.isnan(acc[3])


def test_bad_inputs():
    with pytest.raises(UserError, match="at least 2"):
        frechet_distance(torch.randn(1, 4), torch.randn(5, 4))
    with pytest.raises(ValueError, match="sum to 1"):
        inception_score(torch.rand(20, 3), splits=1)
