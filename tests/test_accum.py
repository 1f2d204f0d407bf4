"""Gradient accumulation (training/step.py): batch 8 x 2 micro-batches is the update of one batch of 16, counted as
16 samples a step, and a resumed run continues it bit for bit."""

import json
import shutil

import pytest
import torch
from helpers import tiny_config
from safetensors.torch import load_file

from ddpm.launch import train_run
from ddpm.training import loop
from ddpm.training.snapshot import list_snapshots, load_snapshot, snapshot_path
from ddpm.training.step import micro_batches

STEPS = 3
RUN = {"steps": STEPS, "lr": 2e-3, "log_every": 1, "snapshot_every": 2, "keep_snapshots": 10, "precision": "fp32"}
SHAPES = {"accum": {"batch_size": 8, "grad_accum": 2}, "large": {"batch_size": 16, "grad_accum": 1}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Both runs from seed 0, with the gradients of their first optimiser step (read just before the update)."""
    out = {}
    for name, shape in SHAPES.items():
        first: list[torch.Tensor] = []

        def capture(model, *args, update=loop.update_weights, first=first):
            if not first:
                first.extend(p.grad.detach().clone() for p in model.parameters())
            update(model, *args)

        folder = tmp_path_factory.mktemp(name)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(loop, "update_weights", capture)
            train_run(tiny_config(**RUN, **shape), folder, progress=False)
        out[name] = (folder, first)
    return out


def records(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_micro_batches_of_each_rank_are_its_slice_of_the_larger_batch():
    # B=2 per micro-batch, R=2 ranks, N=3: rank r trains on samples [6r, 6r + 6) of the 12, as with B=6 and N=1
    parts = [micro_batches(rank, 2, 3) for rank in range(2)]
    assert parts[0] == [slice(0, 2), slice(2, 4), slice(4, 6)]
    assert parts[1] == [slice(6, 8), slice(8, 10), slice(10, 12)]
    samples = list(range(12))
    for rank in range(2):
        whole = micro_batches(rank, 6, 1)[0]
        assert [k for p in parts[rank] for k in samples[p]] == samples[whole]


def test_accumulated_gradient_equals_the_large_batch_gradient(runs):
    """The same samples, each micro-batch's loss / 2: the summed gradient is the large batch's up to float rounding
    (fp32; a missing 1/N would double it, other samples would change it at the percent level)."""
    (_, g_accum), (_, g_large) = runs["accum"], runs["large"]
    assert len(g_accum) == len(g_large) > 0
    for a, b in zip(g_accum, g_large):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7), (a - b).abs().max()


def test_weights_and_losses_match_the_large_batch(runs):
    """Per-step losses agree to 1e-6 (relative); weights after 3 steps to atol 1e-4 (lr / 20) in fp32. The weights'
    tolerance is wider than the gradients' because Adam divides each gradient by its running RMS: a parameter whose
    gradient is still ~0 in the first steps (the zero-initialised layers) turns rounding in the last bits into
    differences of up to about 1% of lr (measured: 1.6e-5 at lr 2e-3)."""
    (accum, _), (large, _) = runs["accum"], runs["large"]
    la, lb = [r["loss"] for r in records(accum)], [r["loss"] for r in records(large)]
    assert len(la) == len(lb) == STEPS and la == pytest.approx(lb, rel=1e-6)
    wa, wb = load_file(str(accum / "checkpoint.safetensors")), load_file(str(large / "checkpoint.safetensors"))
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst < 1e-4


def test_accounting_counts_every_micro_batch(runs):
    accum, _ = runs["accum"]
    logged = records(accum)
    assert [r["samples_seen"] for r in logged] == [16, 32, 48]
    assert all(r["global_batch"] == 16 and r["images_per_s"] > 0 for r in logged)
    final = load_snapshot(snapshot_path(accum, STEPS))
    assert final.state["samples_seen"] == 48 and final.state["stream"] == {"epoch": 0, "offset": 48}
    assert (final.state["batch_size_per_rank"], final.state["grad_accum"], final.state["global_batch"]) == (8, 2, 16)
    assert final.state["grad_scaler"] is None  # fp32: no loss scaling


def test_resumed_accumulating_run_is_bitwise_exact(runs, tmp_path):
    accum, _ = runs["accum"]
    assert [s for s, _ in list_snapshots(accum)] == [3, 2]
    resumed = tmp_path / "resumed"
    (resumed / "snapshots").mkdir(parents=True)
    shutil.copy(snapshot_path(accum, 2), snapshot_path(resumed, 2))
    train_run(tiny_config(**RUN, **SHAPES["accum"]), resumed, progress=False)
    a, b = load_file(str(accum / "checkpoint.safetensors")), load_file(str(resumed / "checkpoint.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert records(resumed) == [{**records(accum)[-1], "images_per_s": records(resumed)[0]["images_per_s"]}]
