"""FID, KID, Inception Score and classifier score from features or class probabilities (no network here).

The statistics come from torchmetrics (FrechetInceptionDistance, KernelInceptionDistance, InceptionScore), fed with
features we have already extracted (features.py) through an identity "feature extractor", in float64:

  FID  = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))      (Heusel et al. 2017; S: unbiased covariances)
  KID  = MMD^2_unbiased with k(x, y) = (x.y / d + 1)^3, mean and std over random subsets  (Binkowski et al. 2018)
  IS   = exp(E_x KL(p(y|x) || p(y))), p(y) = E_x p(y|x), mean and std over splits          (Salimans et al. 2016)

Random subsets (KID) and split order (IS) are drawn under a fixed seed, so every result is reproducible.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from ddpm.common.errors import UserError


class Precomputed(nn.Module):
    """The identity, standing in for torchmetrics' feature extractor: we pass features, not images."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide torchmetrics' notices that we know about ("will save all extracted features in buffer", std of one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _check(features: torch.Tensor, name: str, minimum: int = 2) -> torch.Tensor:
    if features.ndim != 2:
        raise ValueError(f"{name} must be (N, D) features, got shape {tuple(features.shape)}")
    if features.shape[0] < minimum:
        raise UserError(f"{name}: {features.shape[0]} images; at least {minimum} are needed")
    return features.double()  # (N, D) float64


# Every metric below is built with sync_on_compute=False: under torchrun rank 0 alone calls them, on features it has
# already gathered, and torchmetrics' own cross-process sync would wait for ranks that never come.


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two feature sets real (N, D) and fake (M, D), with N, M >= 2, in float64."""
    real, fake = _check(real, "real features"), _check(fake, "generated features")
    metric = FrechetInceptionDistance(feature=Precomputed(real.shape[1]), reset_real_features=False, sync_on_compute=False)
    metric.update(real, real=True)  # accumulates sum x and sum x x^T in float64
    metric.update(fake, real=False)
    return float(metric.compute())


def kid_subset_size(subset_size: int, n: int, m: int, subsets: int) -> int:
    """The size KID's subsets are drawn at from N real and M generated images: at most subset_size and the smaller
    set, and with several subsets at most half of it, so that the subsets differ. A subset as large as its set is the
    whole set in another order, MMD^2 is order-free, and the std over such subsets would be 0 whatever the data."""
    size = min(subset_size, n, m)
    return max(2, min(size, min(n, m) // 2)) if subsets > 1 else size


def kernel_inception_distance(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over `subsets` random subsets of kid_subset_size(...) images from each set)."""
    real, fake = _check(real, "real features"), _check(fake, "generated features")
    size = kid_subset_size(subset_size, real.shape[0], fake.shape[0], subsets)
    with _quiet():
        metric = KernelInceptionDistance(feature=Precomputed(real.shape[1]), subsets=subsets, subset_size=size,
                                         reset_real_features=False, sync_on_compute=False)
        metric.update(real, real=True)
        metric.update(fake, real=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the subsets are torch.randperm draws
            mean, std = metric.compute()
    return float(mean), float(std)


def inception_score(probs: torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) from class probabilities probs (N, K), rows summing to 1: (mean, std) over
    `splits` random equal parts. With Inception logits this is the Inception Score; with the domain classifier it is
    the *classifier score* (never call that IS: its value depends on the classifier)."""
    probs = _check(probs, "class probabilities", minimum=splits)
    if (probs < 0).any() or not torch.allclose(probs.sum(1), torch.ones(len(probs), dtype=probs.dtype), atol=1e-4):
        raise ValueError("class probabilities must be non-negative rows that sum to 1")
    logits = probs.clamp_min(1e-30).log()  # softmax(log p) = p
    with _quiet():
        metric = InceptionScore(feature=Precomputed(probs.shape[1]), splits=splits, sync_on_compute=False)
        metric.update(logits)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the split order is a torch.randperm draw
            mean, std = metric.compute()
    return float(mean), float(std) if splits > 1 else 0.0


def per_class_accuracy(predicted: torch.Tensor, wanted: torch.Tensor, num_classes: int) -> list[float]:
    """Fraction of images of each wanted class (N,) that the classifier labels (N,) as that class; NaN if absent."""
    hits = torch.zeros(num_classes).index_add_(0, wanted, (predicted == wanted).float())
    counts = torch.bincount(wanted, minlength=num_classes).float()
    return (hits / counts).tolist()  # 0/0 -> nan for a class with no image
