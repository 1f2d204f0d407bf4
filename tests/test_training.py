import json
import math

import pytest
import torch
from helpers import tiny_config

from ddpm.api import load_run
from ddpm.common.errors import UserError
from ddpm.launch import train_run
from ddpm.training.optim import ema_decay_at, ema_update, lr_factor


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = tiny_config(steps=60)
    config.diffusion.prediction, config.diffusion.loss_weighting = "eps", "none"  # DDPM's plain objective, below
    run = train_run(config, out, progress=False)
    return out, run


def test_loss_falls_and_metrics_are_logged(trained):
    out, _ = trained
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20, 30, 40, 50, 60]
    assert records[0]["loss"] > 0.5  # starts near E[eps^2] = 1 (zero-initialised output)
    assert records[-1]["loss"] < 0.6 * records[0]["loss"]
    assert all({"lr", "images_per_s", "loss_q0", "loss_q3"} <= r.keys() for r in records)
    # low-noise quarter (q0) is the hardest to predict eps for: its loss exceeds the high-noise quarter's
    assert records[-1]["loss_q0"] > records[-1]["loss_q3"]


def test_run_directory_is_self_describing(trained):
    out, run = trained
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"]["class_names"][9] == "zebra" and cfg["model"]["num_classes"] == 10
    assert any((out / "tb").iterdir())  # TensorBoard events
    reloaded = load_run(out)
    assert reloaded.step == 60 and reloaded.class_names == run.class_names


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_checkpoint_round_trip_gives_identical_samples(trained, sampler):
    out, run = trained
    a = run.sample(["cat", 9], n=2, sampler=sampler, steps=5, seed=7)
    b = load_run(out).sample(["cat", 9], n=2, sampler=sampler, steps=5, seed=7)
    assert a.shape == (4, 1, 16, 16)
    assert torch.equal(a, b)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_image_i_does_not_depend_on_batch_size_or_n(trained, sampler):
    """Same noise per image whatever the batching; the network's batched kernels may differ in the last bits."""
    _, run = trained
    a = run.sample(["cat", 9], n=3, sampler=sampler, steps=5, seed=7)
    b = run.sample(["cat", 9], n=3, sampler=sampler, steps=5, seed=7, batch_size=2)
    assert torch.allclose(a, b, atol=1e-4)
    other_seed = run.sample(["cat", 9], n=3, sampler=sampler, steps=5, seed=8)
    assert (a - other_seed).abs().max() > 0.1
    zebra_alone = run.sample(["zebra"], n=2, sampler=sampler, steps=5, seed=7)  # other n, other classes
    assert torch.allclose(zebra_alone, a[3:5], atol=1e-4)


def test_training_is_deterministic_given_the_seed(tmp_path):
    a = train_run(tiny_config(steps=4), tmp_path / "a", progress=False)
    b = train_run(tiny_config(steps=4), tmp_path / "b", progress=False)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)


def test_refuses_to_overwrite_a_trained_run(trained):
    out, _ = trained
    with pytest.raises(UserError, match="already holds"):
        train_run(tiny_config(steps=1), out, progress=False)


def test_lr_warmup_then_cosine():
    assert lr_factor(0, 10, 100, "constant") == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, "constant") == 1.0 and lr_factor(50, 10, 100, "constant") == 1.0
    assert lr_factor(10, 10, 100, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 10, 100, "cosine") == pytest.approx(0.0, abs=1e-12)


def test_ema_update_is_exponential_average():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = [p.clone() for p in a.parameters()]
    ema_update(a, b, 0.9)
    for pa, p0, pb in zip(a.parameters(), before, b.parameters()):
        assert torch.allclose(pa, 0.9 * p0 + 0.1 * pb)
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_at(10**6, 0.999) == 0.999
    assert math.isclose(ema_decay_at(90, 0.999), 91 / 100)


def test_tensorboard_gets_scalars_and_sample_grids(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb-run"
    train_run(tiny_config(steps=4, sample_every=2), out, progress=False)
    events = EventAccumulator(str(out / "tb"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "train/loss_q0", "train/loss_q3"} <= set(tags["scalars"])
    grids = events.Images("samples/ema")
    assert [g.step for g in grids] == [2, 4]
    # one row per class (10) of 4 samples, 16 px each with torchvision's 2 px padding
    assert (grids[0].height, grids[0].width) == (10 * 18 + 2, 4 * 18 + 2)
