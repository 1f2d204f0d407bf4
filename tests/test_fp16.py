"""fp16 loss scaling (training/step.py): an overflowing step is skipped and halves the scale; the scaler's state
travels in the snapshot and a resumed fp16 run continues bit for bit."""

import copy
import shutil

import pytest
import torch
from helpers import tiny_config
from safetensors.torch import load_file
from torch import nn

from ddpm.launch import train_run
from ddpm.runtime.device import Precision
from ddpm.training import loop, step
from ddpm.training.optim import make_optimizer
from ddpm.training.snapshot import load_snapshot, snapshot_path
from ddpm.training.step import make_scaler, update_weights

FP16 = Precision("fp16", "as asked")


def scale_and_tracker(state: dict) -> tuple[float, int]:
    """(S, clean steps in a row) of a GradScaler state_dict."""
    return state["scale"], state["_growth_tracker"]


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])  # with clipping the gradients are unscaled first; without, in step
def test_an_inf_gradient_skips_the_step_keeps_the_ema_and_halves_the_scale(grad_clip):
    model = nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 1))
    ema = copy.deepcopy(model).requires_grad_(False)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(1.0)  # the EMA differs from the weights, so an update would move it
    optimizer, scaler = make_optimizer(model, tiny_config()), make_scaler(FP16, torch.device("cpu"))
    x = torch.randn(16, 4)
    weights, averaged = [p.clone() for p in model.parameters()], [p.clone() for p in ema.parameters()]

    hook = model[0].weight.register_hook(lambda g: torch.full_like(g, float("inf")))  # an overflow in backward
    scaler.scale(model(x).pow(2).mean()).backward()
    update_weights(model, ema, optimizer, scaler, grad_clip, ema_decay=0.5)
    hook.remove()
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))
    assert all(torch.equal(p, w) for p, w in zip(ema.parameters(), averaged))
    assert scale_and_tracker(scaler.state_dict()) == (step.FP16_INIT_SCALE / 2, 0)
    assert all(int(s["step"]) == 0 for s in optimizer.state.values())  # AdamW did not count it

    optimizer.zero_grad(set_to_none=True)
    scaler.scale(model(x).pow(2).mean()).backward()
    update_weights(model, ema, optimizer, scaler, grad_clip, ema_decay=0.5)
    assert all(not torch.equal(p, w) for p, w in zip(model.parameters(), weights))
    assert all(torch.allclose(e, 0.5 * a + 0.5 * p) for e, a, p in zip(ema.parameters(), averaged, model.parameters()))
    assert scale_and_tracker(scaler.state_dict()) == (step.FP16_INIT_SCALE / 2, 1)
    assert all(int(s["step"]) == 1 for s in optimizer.state.values())


RUN = {"steps": 4, "snapshot_every": 2, "keep_snapshots": 10, "log_every": 1, "precision": "fp16"}


def traced_run(monkeypatch, out) -> list[tuple[dict, dict]]:
    """Train with `RUN`, recording the scaler's state_dict before and after each optimiser step."""
    trace = []

    def update(model, ema, optimizer, scaler, *args, inner=loop.update_weights):
        before = scaler.state_dict()
        inner(model, ema, optimizer, scaler, *args)
        trace.append((before, scaler.state_dict()))

    with monkeypatch.context() as mp:
        mp.setattr(loop, "update_weights", update)
        train_run(tiny_config(**RUN), out, progress=False)
    return trace


def test_a_resumed_fp16_run_restores_the_scale_and_growth_tracker_exactly(monkeypatch, tmp_path):
    # S0 = 2^19 overflows fp16 in the first backward of this run: step 0 is skipped and S halves to 2^18; after
    # 3 clean steps in a row S doubles. A snapshot after step 2 holds (2^18, 1): a resume that lost the count of
    # clean steps would double S at another step and train differently.
    monkeypatch.setattr(step, "FP16_INIT_SCALE", 2.0**19)
    monkeypatch.setattr(step, "FP16_GROWTH_INTERVAL", 3)
    full = traced_run(monkeypatch, tmp_path / "full")
    after = [scale_and_tracker(a) for _, a in full]
    assert after[:4] == [(2.0**18, 0), (2.0**18, 1), (2.0**18, 2), (2.0**19, 0)]  # skipped, clean x 3, grown
    saved = load_snapshot(snapshot_path(tmp_path / "full", 2)).state["grad_scaler"]
    assert saved == full[1][1]  # the snapshot holds the scaler as it was after step 2

    resumed = tmp_path / "resumed"
    (resumed / "snapshots").mkdir(parents=True)
    shutil.copy(snapshot_path(tmp_path / "full", 2), snapshot_path(resumed, 2))
    rest = traced_run(monkeypatch, resumed)
    assert [b for b, _ in rest] == [b for b, _ in full[2:]]  # restored exactly: (2^18, 1), not (S0, 0)
    assert [a for _, a in rest] == [a for _, a in full[2:]]
    a, b = load_file(str(tmp_path / "full/checkpoint.safetensors")), load_file(str(resumed / "checkpoint.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fp16_trains_under_autocast_on_cpu(monkeypatch, tmp_path):
    """The UNet's forward runs in fp16 autocast on CPU (torch 2.14 supports it for every op of the UNet), and the
    run's snapshot holds the scaler's state."""
    dtypes: dict[str, set] = {}

    def build(config, device, inner=loop.build_model):
        model = inner(config, device)
        model.register_forward_hook(lambda module, args, out: dtypes[config.train.precision].add(out.dtype))
        return model

    monkeypatch.setattr(loop, "build_model", build)
    for precision in ("fp16", "fp32"):
        dtypes[precision] = set()
        train_run(tiny_config(steps=1, precision=precision), tmp_path / precision, progress=False)
    assert dtypes == {"fp16": {torch.float16}, "fp32": {torch.float32}}
    saved = load_snapshot(snapshot_path(tmp_path / "fp16", 1)).state["grad_scaler"]
    assert scale_and_tracker(saved) == (step.FP16_INIT_SCALE, 1)
    assert load_snapshot(snapshot_path(tmp_path / "fp32", 1)).state["grad_scaler"] is None
