"""v-prediction (Salimans & Ho 2022): the target, its conversion to eps for the samplers, the min-SNR weight that
makes it the same objective on the eps error, guidance, and a v run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import tiny_config

from ddpm.api import TrainedModel, load_run
from ddpm.diffusion.forward import EpsFromV, as_eps_model, diffusion_loss, eps_from_v, loss_weights, q_sample, v_target
from ddpm.diffusion.guidance import guided_eps
from ddpm.diffusion.sampler import predict_x0
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.launch import train_run

T_CHECK = torch.tensor([0, 1, 10, 250, 500, 900, 990, 999])


def _batch(seed: int = 0, b: int = 8):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(b, 1, 4, 4, generator=gen, dtype=torch.float64) * 2 - 1
    noise = torch.randn(b, 1, 4, 4, generator=gen, dtype=torch.float64)
    return x0, noise


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_v_target_closed_form(name: str) -> None:
    """v = alpha eps - sigma x0 with alpha, sigma from an independent float64 alpha_bar."""
    sched = NoiseSchedule.create(name, 1000)
    ab = sched.alpha_bar.numpy()[T_CHECK.numpy()].reshape(-1, 1, 1, 1)
    x0, noise = _batch()
    v = v_target(sched, x0, T_CHECK, noise)
    np.testing.assert_allclose(v.numpy(), np.sqrt(ab) * noise.numpy() - np.sqrt(1 - ab) * x0.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_eps_and_x0_recovered_from_v_at_every_noise_level(name: str) -> None:
    """eps = alpha v + sigma x_t and x0 = alpha x_t - sigma v, exactly (float64), up to the last cosine step where
    alpha_bar ~ 2e-9; the samplers' x0 from that eps matches x0 to float32 precision divided by alpha."""
    sched = NoiseSchedule.create(name, 1000)
    x0, noise = _batch(1)
    xt = q_sample(sched, x0, T_CHECK, noise)
    v = v_target(sched, x0, T_CHECK, noise)
    eps = eps_from_v(sched, xt, T_CHECK, v)
    torch.testing.assert_close(eps, noise, rtol=0, atol=1e-12)
    a = sched.sqrt_alpha_bar[T_CHECK].view(-1, 1, 1, 1)
    s = sched.sqrt_one_minus_alpha_bar[T_CHECK].view(-1, 1, 1, 1)
    torch.testing.assert_close(a * xt - s * v, x0, rtol=0, atol=1e-12)
    # float32, as the samplers run: x0 from eps_from_v stays within 1e-2 even at alpha ~ 5e-5
    f = EpsFromV(lambda x, t, c: v.float(), sched)(xt.float(), T_CHECK, torch.zeros(8))
    for i, t in enumerate(T_CHECK.tolist()):
        x0_hat = predict_x0(xt[i].float(), f[i], float(sched.alpha_bar[t]))
        assert (x0_hat.double() - x0[i]).abs().max() < 1e-2, t


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_min_snr_v_loss_equals_min_snr_eps_loss_of_the_same_prediction(name: str) -> None:
    """Any v_hat implies eps_hat = eps_from_v(v_hat); min(SNR, 5)/(SNR+1) ||v - v_hat||^2 equals
    min(SNR, 5)/SNR ||eps - eps_hat||^2 sample by sample: the v objective reweights nothing."""
    sched = NoiseSchedule.create(name, 1000)
    x0, noise = _batch(2)
    t = torch.tensor([0, 3, 40, 200, 600, 800, 950, 998])
    v_hat = torch.randn(x0.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    xt = q_sample(sched, x0, t, noise)
    eps_hat = eps_from_v(sched, xt, t, v_hat)
    v_err = (v_target(sched, x0, t, noise) - v_hat).pow(2).flatten(1).mean(1)
    eps_err = (noise - eps_hat).pow(2).flatten(1).mean(1)
    wv = loss_weights(sched, t, "min-snr", prediction="v").double()
    we = loss_weights(sched, t, "min-snr", prediction="eps").double()
    torch.testing.assert_close(wv * v_err, we * eps_err, rtol=1e-5, atol=0)  # weights are float32
    assert not torch.allclose(wv, we)  # the two weights differ; their products do not

    _, per_sample = diffusion_loss(lambda x, tt, c: v_hat.float(), sched, x0.float(), torch.zeros(8), t,
                                   noise.float(), weighting="min-snr", prediction="v")
    torch.testing.assert_close(per_sample.double(), v_err, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weighting", ["min-snr", "trunc-min-snr"])
def test_v_weights_are_their_x0_weights(weighting: str) -> None:
    """The weighted v loss equals the stated weight on the x0 error, x0_hat = sqrt(ab) x_t - sqrt(1 - ab) v_hat:
    min(SNR, 5) for min-snr, clip(SNR, 1, 5) for trunc-min-snr (forward.loss_weights' doc)."""
    sched = NoiseSchedule.create("cosine", 1000)
    x0, noise = _batch(2)
    t = torch.tensor([0, 3, 40, 200, 600, 800, 950, 998])
    v_hat = torch.randn(x0.shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    xt = q_sample(sched, x0, t, noise)
    a = sched.alpha_bar.double()[t].view(-1, 1, 1, 1)
    x0_hat = a.sqrt() * xt - (1 - a).sqrt() * v_hat
    snr = (a / (1 - a)).flatten()
    w_x0 = snr.clamp(max=5.0) if weighting == "min-snr" else snr.clamp(1.0, 5.0)
    v_err = (v_target(sched, x0, t, noise) - v_hat).pow(2).flatten(1).mean(1)
    x0_err = (x0 - x0_hat).pow(2).flatten(1).mean(1)
    wv = loss_weights(sched, t, weighting, prediction="v").double()
    torch.testing.assert_close(wv * v_err, w_x0 * x0_err, rtol=1e-5, atol=0)


def test_oracle_v_model_has_zero_loss() -> None:
    sched = NoiseSchedule.create("cosine", 1000)
    x0, noise = _batch(3)

    def oracle(xt: torch.Tensor, tt: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        a = sched.sqrt_alpha_bar[tt].view(-1, 1, 1, 1)
        s = sched.sqrt_one_minus_alpha_bar[tt].view(-1, 1, 1, 1)
        eps = (xt.double() - a * x0) / s
        return (a * eps - s * x0).float()

    loss, per_sample = diffusion_loss(oracle, sched, x0.float(), torch.zeros(8), T_CHECK, noise.float(),
                                      weighting="min-snr", prediction="v")
    assert loss.item() < 1e-10 and per_sample.max().item() < 1e-10


def test_guidance_on_v_equals_guidance_on_eps() -> None:
    """eps is affine in v for a fixed x_t, so eps_from_v(v_u + w (v_c - v_u)) = guided eps of the converted model."""
    sched = NoiseSchedule.create("cosine", 1000)
    gen = torch.Generator().manual_seed(4)
    table = torch.randn(11, 1, 4, 4, generator=gen)  # one v offset per class, the null class 10 included

    def net(x, t, c):
        return 0.3 * x + table[c]

    x = torch.randn(4, 1, 4, 4, generator=gen)
    t = torch.full((4,), 700)
    cond = torch.tensor([0, 3, 3, 9])
    got = guided_eps(EpsFromV(net, sched), x, t, cond, null_id=10, w=3.0)
    v = guided_eps(net, x, t, cond, null_id=10, w=3.0)
    torch.testing.assert_close(got, eps_from_v(sched, x, t, v), rtol=1e-5, atol=1e-6)


def test_unknown_prediction_is_refused() -> None:
    sched = NoiseSchedule.create("linear", 10)
    with pytest.raises(ValueError, match="unknown prediction 'x0'"):
        as_eps_model(lambda x, t, c: x, sched, "x0")
    x0, noise = _batch()
    with pytest.raises(ValueError, match="unknown prediction"):
        diffusion_loss(lambda x, t, c: x, sched, x0.float(), torch.zeros(8), torch.zeros(8, dtype=torch.long),
                       noise.float(), prediction="x0")


class _PointMassV(torch.nn.Module):
    """The exact v network for data = one image x*: eps = (x_t - alpha x*) / sigma, v = alpha eps - sigma x*."""

    null_id = 10

    def __init__(self, sched: NoiseSchedule, target: torch.Tensor) -> None:
        super().__init__()
        self.sched, self.target = sched, target

    def forward(self, x, t, c):
        a = self.sched.sqrt_alpha_bar[t].view(-1, 1, 1, 1).float()
        s = self.sched.sqrt_one_minus_alpha_bar[t].view(-1, 1, 1, 1).float()
        return a * (x - a * self.target) / s - s * self.target


@pytest.mark.parametrize("sampler", ["ddim", "dpm++2m", "ddpm"])
def test_a_v_run_samples_through_the_conversion(sampler: str) -> None:
    """A TrainedModel whose config says v, holding the exact v network of a point mass, predicts that point at every
    step (x0_hat) and draws it; the same network read as eps predicts far from it at the first steps."""
    config = tiny_config()
    config.data.class_names, config.model.num_classes = [str(i) for i in range(10)], 10
    sched = NoiseSchedule.create("cosine", 100)
    target = torch.linspace(-0.8, 0.8, 256).view(1, 1, 16, 16)
    run = TrainedModel(config, _PointMassV(sched, target), sched, 0, torch.device("cpu"))

    def draw(prediction: str) -> tuple[torch.Tensor, list[float]]:
        config.diffusion.prediction = prediction
        errors: list[float] = []  # max |x0_hat - target| per step
        x = run.sample([0, 1], n=2, sampler=sampler, steps=10, guidance=3.0, seed=0,
                       callback=lambda t, x_t, x0: errors.append((x0 - target).abs().max().item()))
        return x, errors

    x, errors = draw("v")
    assert len(errors) == 10 and max(errors) < 1e-3
    assert (x - target).abs().max() < 1e-3
    _, wrong = draw("eps")
    assert wrong[0] > 0.5  # read as eps, the first x0_hat is clipped noise, not the point


def test_v_training_run_end_to_end(tmp_path) -> None:
    config = tiny_config(steps=40)
    config.diffusion.prediction = "v"
    config.diffusion.loss_weighting = "min-snr"
    run = train_run(config, tmp_path, progress=False)
    assert json.loads((tmp_path / "config.json").read_text())["diffusion"]["prediction"] == "v"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < 0.7 * records[0]["loss"]
    reloaded = load_run(tmp_path)
    assert isinstance(reloaded.eps_model, EpsFromV)
    a = run.sample(["cat"], n=2, steps=5, seed=3)
    assert torch.equal(a, reloaded.sample(["cat"], n=2, steps=5, seed=3))
    assert a.abs().max() <= 1


def test_a_config_without_prediction_reads_as_eps() -> None:
    """Runs saved before v-prediction existed (config format 1) have no `prediction` key: they are eps runs."""
    from ddpm.config import RunConfig

    saved = json.loads(tiny_config().to_json())
    saved["format_version"] = 1
    del saved["diffusion"]["prediction"]
    assert RunConfig.from_dict(saved).diffusion.prediction == "eps"


def test_a_checkpoint_with_an_unknown_prediction_is_a_user_error(tmp_path) -> None:
    import copy

    from ddpm.common.errors import UserError
    from ddpm.network.unet import UNet
    from ddpm.training.checkpoint import CHECKPOINT_NAME, save_checkpoint

    config = tiny_config()
    config.data.class_names, config.model.num_classes = [str(i) for i in range(10)], 10
    config.diffusion.prediction = "x0"
    model = UNet(config.model)
    save_checkpoint(tmp_path / CHECKPOINT_NAME, config, model, copy.deepcopy(model), 0)
    with pytest.raises(UserError, match="diffusion.prediction must be one of eps, v, got 'x0'"):
        load_run(tmp_path)
