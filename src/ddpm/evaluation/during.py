"""Quality while a run trains (`ddpm train --eval-every N`): the Evaluator that training/watch.py calls on rank 0.

Each evaluation samples N images of the EMA model (N split evenly over the classes, 20 DDIM steps at the model's
default guidance, the same seeds every time) and measures them with evaluate.py against the same fixed subset of the
held-out split: KID on Inception features (the score best.safetensors is chosen by: unbiased at any N, unlike FID,
whose upward bias at small N would favour nothing but N), FID beside it, per-class accuracy and classifier FID when
a domain classifier is given, and for a text model on builtin:shapes-text the prompt faithfulness of its seen and
held-out evaluation scenes (colour_seen, shape_held_out, ...: evaluation/faithfulness.py; not counted in N's
budget), on other captioned data the colour-word accuracy (colour_words).

How N is sized: evaluation should cost at most about 10% of the training time. At the first evaluation the cost of
one image (sampling plus Inception features) is measured on one image per class, and
    N = 0.10 x (training seconds since the run started or resumed) / (seconds per image),
rounded down to a multiple of the number of classes, between MIN_SAMPLES (at least two per class) and MAX_SAMPLES.
N is then fixed for the whole run (also across a resume: read back from metrics.jsonl), so the numbers compare.
The reference is the whole held-out split, as for `ddpm eval` and bench/sampler_quality.py: its features are computed
once, at the first evaluation (which says how long that takes), and cached for all three (evaluation/refcache.py).
`--eval-samples N` fixes N instead.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from ddpm.api import TrainedModel
from ddpm.config import RunConfig
from ddpm.diffusion.sampling import PREVIEW_SAMPLING
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.evaluation.classifier import DomainClassifier, load_classifier
from ddpm.evaluation.evaluate import EvalSettings, evaluate
from ddpm.network.unet import UNet
from ddpm.training.metrics import read_evals
from ddpm.training.watch import EvalPoint

BUDGET = 0.10  # the share of training time evaluations may take
MIN_SAMPLES, MAX_SAMPLES = 20, 1_000
SAMPLING = replace(PREVIEW_SAMPLING, batch_size=100)  # 20 DDIM steps, the model's default guidance, seed 0


def size_samples(train_seconds: float, seconds_per_image: float, num_classes: int) -> int:
    """N = BUDGET x train_seconds / seconds_per_image, a multiple of num_classes in [MIN_SAMPLES, MAX_SAMPLES] (and at
    least two images per class, the fewest KID's and FID's covariances allow per class)."""
    lo = max(MIN_SAMPLES, 2 * num_classes)
    lo = math.ceil(lo / num_classes) * num_classes
    hi = max(lo, MAX_SAMPLES // num_classes * num_classes)
    n = int(BUDGET * train_seconds / max(seconds_per_image, 1e-9)) // num_classes * num_classes
    return min(max(n, lo), hi)


class TrainingEval:
    """An Evaluator (training/watch.py) over `out_dir`'s run: see the module docstring."""

    def __init__(self, out_dir: Path, num_samples: int = 0, classifier: str | Path = "", cache_dir: Path | None = None,
                 device: torch.device | str = "cpu", inception: bool = True,
                 log: Callable[[str], None] = lambda line: tqdm.write(line, file=sys.stderr)) -> None:
        self.out_dir, self.cache_dir, self.device, self.log = Path(out_dir), cache_dir, torch.device(device), log
        self.num_samples, self.inception = num_samples, inception
        self.classifier: DomainClassifier | None = load_classifier(classifier, self.device) if classifier else None
        if not (inception or self.classifier):
            raise ValueError("TrainingEval measures with Inception, a classifier or both")

    def __call__(self, step: int, ema: UNet, config: RunConfig, train_seconds: float) -> EvalPoint:
        t0 = time.perf_counter()
        schedule = NoiseSchedule.create(config.diffusion.schedule, config.diffusion.num_steps)
        run = TrainedModel(config, ema, schedule, step, self.device, self.out_dir)
        notes = []
        if not self.num_samples:
            self.num_samples = self._from_earlier_evals() or self._sized(run, train_seconds, notes)
        settings = EvalSettings(num_samples=self.num_samples, sampling=SAMPLING, inception=self.inception, kid_subsets=50)
        result, _ = evaluate(run, settings, self.classifier, self.cache_dir,
                             announce=lambda line: self.log(f"eval: {line}"))
        m = result["metrics"]
        values = {"num_samples": float(result["num_generated"])}
        if "kid" in m:
            values.update(kid=m["kid"]["mean"], kid_std=m["kid"]["std"], fid=m["fid"])
        if "accuracy" in m:
            values.update(accuracy=m["accuracy"], min_class_accuracy=min(m["per_class_accuracy"].values()),
                          classifier_fid=m["classifier_fid"])
        for group in ("seen", "held_out"):  # text models on builtin:shapes-text: prompt faithfulness (evaluate.py)
            values.update({f"{a}_{group}": v for a, v in m.get("faithfulness", {}).get(group, {}).items()})
        if "colour_words" in m:  # text models on other captioned data
            values["colour_words"] = m["colour_words"]["accuracy"]
        metric = "kid" if "kid" in values else "classifier_fid"
        return EvalPoint(values, values.get(metric), metric, time.perf_counter() - t0, notes)

    def _from_earlier_evals(self) -> int:
        """N of this run's earlier evaluations (a resumed run keeps its N), or 0."""
        path = self.out_dir / "metrics.jsonl"
        found = [int(r["eval"]["num_samples"]) for r in (read_evals(path) if path.is_file() else [])
                 if "num_samples" in r["eval"]]
        return found[0] if found else 0

    def _sized(self, run: TrainedModel, train_seconds: float, notes: list[str]) -> int:
        """Time one image per class through sampling and the measurement, then size_samples."""
        k = len(run.class_names)
        t0 = time.perf_counter()
        probe = EvalSettings(num_samples=max(2, k), sampling=SAMPLING, inception=self.inception, max_real=2,
                             kid_subsets=1)
        evaluate(run, probe, self.classifier, self.cache_dir)
        per_image = (time.perf_counter() - t0) / max(2, k)
        n = size_samples(train_seconds, per_image, k)
        notes.append(f"eval: {n} images per evaluation ({per_image:.2f} s an image, {train_seconds:.0f} s of training "
                     f"between evaluations; about {BUDGET:.0%} of the training time, fixed for the run; "
                     "--eval-samples sets it)")
        return n
