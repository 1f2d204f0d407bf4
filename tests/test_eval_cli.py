"""`ddpm eval` and `ddpm classifier train` end to end on a tiny run (no Inception: --no-inception), determinism,
and their one-line errors."""

import json
import subprocess
import sys

import pytest
from helpers import tiny_config

from ddpm.cli import main
from ddpm.common.errors import UserError
from ddpm.data.dataset import load_dataset
from ddpm.evaluation.classifier import holdout, load_classifier, save_classifier, train_classifier
from ddpm.launch import train_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    train_run(tiny_config(steps=3), out, progress=False)
    return out


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    data = load_dataset("builtin:animal-shapes", 16, 1, "train")
    train, test = holdout(data, every=20)
    small, _ = holdout(train, every=4)  # a quarter of the train split keeps this to seconds
    model = train_classifier(small, test, "builtin:animal-shapes", epochs=1, width=8)
    assert 0 <= model.config.test_accuracy <= 1
    return save_classifier(model, tmp_path_factory.mktemp("clf") / "clf.safetensors")


def eval_args(run_dir, out, *extra):
    return ["eval", "--checkpoint", str(run_dir), "--num-samples", "20", "--steps", "2", "--no-inception", "--quiet",
            "--out", str(out), *extra]


def test_eval_writes_json_report_and_grid_and_is_deterministic(run_dir, classifier_file, tmp_path, capsys):
    for name in ("a", "b"):
        assert main(eval_args(run_dir, tmp_path / name, "--classifier", str(classifier_file),
                              "--cache-dir", str(tmp_path / "cache"))) == 0
    printed = capsys.readouterr().out
    assert "classifier score (not IS" in printed and "biased" in printed
    a, b = (json.loads((tmp_path / n / "eval.json").read_text()) for n in "ab")
    assert a["metrics"] == b["metrics"] and a["num_generated"] == 20 and a["num_real"] == 1000
    assert set(a["metrics"]["per_class_accuracy"]) == set(a["classes"]) and "fid" not in a["metrics"]
    assert {"sampling", "classifier"} <= set(a["seconds"])
    assert (tmp_path / "a" / "samples.png").is_file() and "# Evaluation" in (tmp_path / "a" / "report.md").read_text()


def test_eval_with_dpm_solver_defaults_to_20_steps(run_dir, tmp_path):
    args = ["eval", "--checkpoint", str(run_dir), "--num-samples", "10", "--sampler", "dpm++2m", "--no-inception",
            "--quiet", "--out", str(tmp_path / "e")]
    assert main(args) == 0
    settings = json.loads((tmp_path / "e" / "eval.json").read_text())["settings"]
    assert settings["sampler"] == "dpm++2m" and settings["steps"] == 20


def test_classifier_round_trip(classifier_file):
    model = load_classifier(classifier_file)
    assert model.config.image_size == 16 and len(model.config.class_names) == 10


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ddpm", *args], capture_output=True, text=True, timeout=300)


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_eval_errors(run_dir, classifier_file, tmp_path):
    out = tmp_path / "e"
    assert_user_error(run_cli(*eval_args(run_dir, out, "--classifier", str(tmp_path / "none.safetensors"))),
                      "does not exist", "ddpm classifier train")
    assert_user_error(run_cli(*eval_args(run_dir, out, "--inception-weights", str(tmp_path / "none.pt"))),
                      "does not exist", "inception-2015-12-05.pt")
    (tmp_path / "empty").mkdir()
    assert_user_error(run_cli(*eval_args(run_dir, out, "--data", str(tmp_path / "empty"))))
    big = tmp_path / "clf28.safetensors"
    data = load_dataset("builtin:animal-shapes", 28, 1, "test")
    model = train_classifier(*holdout(holdout(data, every=10)[1], every=2), "builtin:animal-shapes", epochs=1, width=4)
    save_classifier(model, big)
    assert_user_error(run_cli(*eval_args(run_dir, out, "--classifier", str(big))), "28x28", "1x16x16")


@pytest.mark.slow
def test_sharded_eval_with_two_gloo_processes_equals_single_process(run_dir, classifier_file, tmp_path):
    """torchrun with 2 ranks: each samples and classifies its share of the (class, j) pairs, rank 0 gathers and
    measures; the numbers must be those of one process (up to batched-kernel rounding)."""
    import os
    import signal
    from pathlib import Path

    args = eval_args(run_dir, tmp_path / "one", "--classifier", str(classifier_file), "--num-samples", "30",
                     "--device", "cpu", "--cache-dir", str(tmp_path / "cache"))
    assert main(args) == 0
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    args = eval_args(run_dir, tmp_path / "two", "--classifier", str(classifier_file), "--num-samples", "30",
                     "--device", "cpu", "--cache-dir", str(tmp_path / "cache2"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([torchrun, "--standalone", "--nproc_per_node=2", "-m", "ddpm", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and any worker left behind
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0, log[-3000:]
    assert log.count("per-class accuracy") == 1, log[-3000:]  # rank 0 alone reports
    one, two = (json.loads((tmp_path / n / "eval.json").read_text()) for n in ("one", "two"))
    assert one["num_generated"] == two["num_generated"] == 30
    m1, m2 = one["metrics"], two["metrics"]
    assert m1["per_class_accuracy"] == pytest.approx(m2["per_class_accuracy"], abs=1e-6)
    assert m1["accuracy"] == pytest.approx(m2["accuracy"], abs=1e-6)
    for key in ("mean", "std"):
        assert m1["classifier_score"][key] == pytest.approx(m2["classifier_score"][key], abs=1e-6)
    assert m1["classifier_fid"] == pytest.approx(m2["classifier_fid"], rel=1e-4, abs=1e-4)


def test_reference_features_are_made_once_for_training_evals_and_eval(run_dir, classifier_file, tmp_path, monkeypatch):
    """The in-training evaluation and `ddpm eval` compare with the same real images (the whole test split) through
    one cache entry: the second never runs the network on them (counted as calls, not timed). The first pass says
    how long it will take before it starts."""
    from ddpm.api import load_run
    from ddpm.evaluation import refcache
    from ddpm.evaluation.during import TrainingEval
    from ddpm.evaluation.evaluate import EvalSettings, evaluate

    passes = []  # the network over real images: refcache's extract calls (generated images go elsewhere)
    monkeypatch.setattr(refcache, "extract", lambda fn, images, *a, **k: passes.append(len(images)) or
                        _extract(fn, images, *a, **k))
    run = load_run(run_dir)
    lines = []
    during = TrainingEval(tmp_path / "run", num_samples=20, classifier=classifier_file, inception=False,
                          cache_dir=tmp_path / "cache", log=lines.append)
    during(run.step, run.model, run.config, 100.0)
    assert sum(passes) == 1000  # the test split, once
    assert len(lines) == 1 and "features of 1,000 real images: about" in lines[0] and "once" in lines[0]
    evaluate(run, EvalSettings(num_samples=20, inception=False), load_classifier(classifier_file), tmp_path / "cache")
    during(run.step, run.model, run.config, 100.0)
    assert sum(passes) == 1000 and len(lines) == 1  # cache hits: no network call on the real images, nothing said


def _extract(*args, **kwargs):
    from ddpm.evaluation.features import extract

    return extract(*args, **kwargs)


def test_eval_feature_precision_is_fp32_unless_asked(run_dir, tmp_path):
    """fp32 features by default (bf16 moves FID beyond 0.5%: docs/benchmarks.md); the flag reaches eval.json, and an
    unknown precision is a one-line error."""
    from ddpm.evaluation.evaluate import EvalSettings

    assert EvalSettings().feature_precision == "fp32"
    with pytest.raises(UserError, match="unknown feature precision 'int8'; choose fp32, bf16, fp16"):
        EvalSettings(feature_precision="int8")
    assert main(eval_args(run_dir, tmp_path / "e", "--feature-precision", "bf16")) == 0
    assert json.loads((tmp_path / "e" / "eval.json").read_text())["settings"]["feature_precision"] == "bf16"
