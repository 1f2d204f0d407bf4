"""Watching a run while it trains (issue 17, part 4-5): sample PNGs every --sample-every steps (the same seeds, so
the same model draws the same grid), evaluations every --eval-every steps into metrics.jsonl with best.safetensors
following the best score (also across a resume), the sizing rule of the evaluation sample, and the run's index.html
at each checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import tiny_config
from PIL import Image

from ddpm.evaluation.classifier import holdout, save_classifier, train_classifier
from ddpm.evaluation.during import MAX_SAMPLES, MIN_SAMPLES, TrainingEval, size_samples
from ddpm.launch import train_run
from ddpm.training.checkpoint import load_checkpoint
from ddpm.training.metrics import read_evals, read_metrics
from ddpm.training.watch import BEST_NAME, EvalPoint


class Scripted:
    """An evaluator whose scores are given in advance; it records what the loop passed it."""

    def __init__(self, scores: list[float]) -> None:
        self.scores, self.calls = list(scores), []

    def __call__(self, step, ema, config, train_seconds) -> EvalPoint:
        self.calls.append((step, train_seconds, float(next(ema.parameters()).detach().sum())))
        score = self.scores.pop(0)
        return EvalPoint({"kid": score, "num_samples": 20.0}, score, "kid", 0.01)


def watched(steps: int, **train):
    return tiny_config(steps=steps, **train)


def test_sample_pngs_every_n_steps_with_the_same_seeds(tmp_path):
    for name in ("a", "b"):
        train_run(watched(6, sample_every=3), tmp_path / name, progress=False)
    grids = sorted(p.name for p in (tmp_path / "a" / "samples").iterdir())
    assert grids == ["step-000003.png", "step-000006.png"]
    a3, a6, b6 = (np.asarray(Image.open(tmp_path / run / "samples" / g)) for run, g in
                  (("a", grids[0]), ("a", grids[1]), ("b", grids[1])))
    # one row per class, 4 images a row, 16 px images with 2 px padding: (10 x 18 + 2) x (4 x 18 + 2)
    assert a3.shape[:2] == (10 * 18 + 2, 4 * 18 + 2)
    assert np.array_equal(a6, b6)  # the same weights and the same seeds: the same grid
    assert not np.array_equal(a3, a6)  # three more steps change the model, and so the grid


def test_evaluations_keep_the_best_checkpoint_and_survive_a_resume(tmp_path):
    out = tmp_path / "run"
    scripted = Scripted([3.0, 1.0, 2.0])
    train_run(watched(6, eval_every=2), out, progress=False, evaluator=scripted)
    assert [c[0] for c in scripted.calls] == [2, 4, 6] and all(c[1] > 0 for c in scripted.calls)
    evals = read_evals(out / "metrics.jsonl")
    assert [(r["step"], r["eval"]["kid"], r["eval_metric"]) for r in evals] == [(2, 3.0, "kid"), (4, 1.0, "kid"),
                                                                                (6, 2.0, "kid")]
    assert len(read_metrics(out / "metrics.jsonl")) >= 1  # the training records are read as before
    _, _, best_ema, best_step = load_checkpoint(out / BEST_NAME)
    _, _, last_ema, last_step = load_checkpoint(out / "checkpoint.safetensors")
    assert (best_step, last_step) == (4, 6)
    assert any(not torch.equal(best_ema[k], last_ema[k]) for k in best_ema)  # step 4's weights, not step 6's
    # continue to step 10: the best so far (1.0 at step 4) is remembered from metrics.jsonl, so 1.5 is no new best
    later = Scripted([1.5])
    train_run(watched(10, eval_every=4), out, progress=False, evaluator=later)
    assert [c[0] for c in later.calls] == [8]
    assert load_checkpoint(out / BEST_NAME)[3] == 4 and len(read_evals(out / "metrics.jsonl")) == 4
    page = (out / "index.html").read_text()
    assert "Evaluations while training" in page and "best.safetensors" in page


def test_a_non_improving_or_missing_score_never_writes_best(tmp_path):
    out = tmp_path / "run"
    train_run(watched(4, eval_every=2), out, progress=False,
              evaluator=lambda step, ema, config, s: EvalPoint({"accuracy": 0.5}, None, "", 0.0))
    assert not (out / BEST_NAME).exists() and len(read_evals(out / "metrics.jsonl")) == 2


@pytest.mark.parametrize("train_s, per_image, k, expected", [
    (100.0, 0.1, 10, 100),   # 10% of 100 s = 10 s at 0.1 s an image
    (100.0, 0.3, 10, 30),    # 33.3 images, rounded down to a multiple of 10
    (1.0, 1.0, 10, 20),      # too little time: the floor (two per class, at least MIN_SAMPLES)
    (1e6, 0.01, 10, 1000),   # a long run: the ceiling
    (100.0, 0.1, 3, 99),     # a multiple of 3
    (1.0, 1.0, 30, 60),      # 30 classes: at least two per class
])
def test_the_evaluation_sample_costs_a_tenth_of_training(train_s, per_image, k, expected):
    n = size_samples(train_s, per_image, k)
    assert n == expected and n % k == 0 and n >= max(MIN_SAMPLES, 2 * k) and n <= max(MAX_SAMPLES, 2 * k)


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    from ddpm.data.dataset import load_dataset

    data = load_dataset("builtin:animal-shapes", 16, 1, "train")
    train, test = holdout(data, every=20)
    small, _ = holdout(train, every=4)
    model = train_classifier(small, test, "builtin:animal-shapes", epochs=1, width=8)
    return save_classifier(model, tmp_path_factory.mktemp("clf") / "clf.safetensors")


def test_training_eval_measures_with_the_classifier_and_keeps_its_n(tmp_path, classifier_file):
    """The real evaluator (without Inception, for speed): per-class accuracy and classifier FID every 3 steps, the
    sample size fixed at the first evaluation and reused after a resume."""
    out = tmp_path / "run"
    evaluator = TrainingEval(out, num_samples=0, classifier=classifier_file, inception=False,
                             cache_dir=tmp_path / "cache")
    train_run(watched(6, eval_every=3), out, progress=False, evaluator=evaluator)
    evals = read_evals(out / "metrics.jsonl")
    assert [r["step"] for r in evals] == [3, 6] and {r["eval_metric"] for r in evals} == {"classifier_fid"}
    sizes = {r["eval"]["num_samples"] for r in evals}
    assert len(sizes) == 1 and next(iter(sizes)) % 10 == 0
    for r in evals:
        assert 0 <= r["eval"]["accuracy"] <= 1 and r["eval"]["classifier_fid"] >= 0
        assert r["eval_score"] == r["eval"]["classifier_fid"]
    assert (out / BEST_NAME).is_file()
    again = TrainingEval(out, classifier=classifier_file, inception=False, cache_dir=tmp_path / "cache")
    train_run(watched(9, eval_every=3), out, progress=False, evaluator=again)
    assert again.num_samples == evals[0]["eval"]["num_samples"]  # read back, not sized again


def test_every_run_gets_an_index_page(tmp_path):
    out = tmp_path / "run"
    train_run(watched(4, sample_every=2), out, progress=False)
    page = (out / "index.html").read_text()
    for needle in ("ddpm sample --checkpoint", "ddpm serve --checkpoint", "samples/step-000002.png",
                   "samples/step-000004.png", "training_curve.png", "train.steps", "Configuration"):
        assert needle in page, needle
    assert (out / "training_curve.png").is_file()
    config = json.loads((out / "config.json").read_text())
    assert f"<td>{config['train']['steps']}</td>" in page


def test_wandb_offline_logs_curves_evaluations_and_grids(tmp_path, monkeypatch):
    """--log wandb with WANDB_MODE=offline: no network, the run's W&B log in OUT/wandb holds the curves, the
    evaluations and the grids (the keys and values are plain text inside its protobuf records)."""
    pytest.importorskip("wandb", reason="wandb is in the test extra; pip install -e '.[test]'")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    train_run(watched(4, log="wandb", log_every=2, sample_every=4, eval_every=2), out, progress=False,
              evaluator=Scripted([0.25, 0.125]))
    logs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    data = logs[0].read_bytes()
    for needle in (b"train/loss", b"train/lr", b"eval/kid", b"0.125", b"samples/ema"):
        assert needle in data, needle
    assert (out / "wandb-run-id").read_text().strip() in logs[0].name


def test_log_wandb_without_wandb_is_one_line(tmp_path, monkeypatch):
    import builtins

    from ddpm.common.errors import UserError

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("no wandb")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(UserError, match="pip install wandb"):
        train_run(watched(2, log="wandb"), tmp_path / "run", progress=False)
