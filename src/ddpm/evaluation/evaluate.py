"""`ddpm eval` as a library call: sample N images of a trained run, class by class, then measure them against
the real held-out images: FID/KID on Inception features, per-class accuracy, classifier score and
classifier-feature FID with the domain classifier, and IS when Inception weights with logits are given. Text
models also get prompt faithfulness: on builtin:shapes-text colour, shape, count and position of seen and held-out
pairs; on other captioned colour data the colour-word check (up to 100 of the run's captions that name one colour,
one image each, its hue read from the pixels: faithfulness.colour_words). Every metric is timed; the reference
side's features are cached (refcache.py).

Under torchrun each rank samples a contiguous share of the N (class, j) pairs (image j of a class is seeded by
(seed, j), so it is the same image whichever rank makes it) and extracts its features; rank 0 gathers them in
order, extracts the reference features and alone computes the metrics."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ddpm.api import TrainedModel, load_run
from ddpm.common.errors import UserError
from ddpm.common.pixels import to_uint8
from ddpm.data.dataset import ImageData, load_dataset
from ddpm.data.shapes_text import SHAPES_TEXT
from ddpm.diffusion.sampling import EVAL_SAMPLING, SamplingConfig
from ddpm.evaluation import metrics
from ddpm.evaluation.classifier import DomainClassifier, load_classifier
from ddpm.evaluation.faithfulness import (EvalScenes, FaithfulnessReport, colour_prompts, colour_words, eval_scenes,
                                          faithfulness)
from ddpm.evaluation.features import (InceptionFeatures, InceptionProbabilities, check_feature_precision, extract,
                                      precision_note)
from ddpm.evaluation.refcache import reference_features
from ddpm.runtime.distributed import World, gather_to_main, init, shutdown
from ddpm.runtime.progress import SamplingBar, bar

UNBIASED_FID_SAMPLES = 10_000  # FID's upward bias at N samples shrinks roughly like 1/N; below this, say so
MAX_SAMPLES = 1_000_000  # 20x the literature's 50k; the generated images are held in memory (12 GB at 3x64x64)
INCEPTION_BATCH = 16  # images per Inception call: on a Zen 4 CPU 15.4-16.2 images/s at 16 against 13.9 at 50
# (bench/eval_throughput.py --batch-sizes 8 16 25 32, docs/benchmarks.md); on an AVX2 CPU they ran at the same rate


def default_num_samples(device: torch.device) -> int:
    """50k is the literature's FID; on a CPU (sampling and Inception features take most of a second an image) 1,000
    is what fits (timings in docs/evaluation.md)."""
    return 10_000 if device.type == "cuda" else 1_000


@dataclass
class EvalSettings:
    num_samples: int = 1_000  # in total, split evenly over the classes (rounded up)
    sampling: SamplingConfig = EVAL_SAMPLING  # its seed also seeds KID's subsets
    data: str = ""  # dataset of the reference images ("" = the run's)
    split: str = "test"
    inception: bool = True  # FID/KID on Inception features (slow on a CPU)
    feature_precision: str = "fp32"  # of the Inception features: fp32, or bf16 / fp16 (faster, FID moves: features.py)
    inception_weights: str | None = None  # a file with Inception logits, for the standard IS
    kid_subsets: int = 100
    kid_subset_size: int = 1_000
    max_real: int = 0  # compare against at most this many real images, a fixed seeded subset (0: all of the split)

    def __post_init__(self) -> None:
        n = self.num_samples  # covariances need 2; the bound keeps a typo from exhausting memory
        if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= MAX_SAMPLES:
            raise UserError(f"--num-samples must be a whole number from 2 to {MAX_SAMPLES:,}, got {n!r}")
        check_feature_precision(self.feature_precision)

    def to_dict(self, used: SamplingConfig) -> dict[str, Any]:
        """JSON-ready and flat (eval.json's "settings"), with `used`: this sampling as the run applies it (steps and
        guidance as numbers: TrainedModel.effective_sampling)."""
        d = {k: v for k, v in asdict(self).items() if k != "sampling"}
        return {**used.to_dict(), **d}


Progress = Callable[[str], None]


def load_reference(run: TrainedModel, settings: EvalSettings, cache_dir: Path | None = None,
                   progress: bool = False) -> ImageData:
    """The real images to compare against, at the run's image size and channels (the `test` split); `progress`: a bar
    while a folder is decoded into the cache the first time."""
    c = run.config.model
    source = settings.data or run.config.data.source
    data = load_dataset(source, c.image_size, c.channels, settings.split, options=None if settings.data else run.config.data,
                        cache_dir=cache_dir, progress=progress)
    if len(data) == 0:
        raise UserError(f"{source} holds no images to compare against")
    if tuple(data.images.shape[1:]) != (c.channels, c.image_size, c.image_size):
        raise UserError(f"{source} gives {'x'.join(map(str, data.images.shape[1:]))} images but the run makes "
                        f"{c.channels}x{c.image_size}x{c.image_size}; use --data with a dataset of that size")
    if [n.lower() for n in data.class_names] != [n.lower() for n in run.class_names]:
        raise UserError(f"{source} has classes {data.class_names}, the run {run.class_names}; give the run's dataset")
    return data


def evaluate(run: TrainedModel, settings: EvalSettings, classifier: DomainClassifier | None = None,
             cache_dir: Path | None = None, log: Progress = lambda _: None,
             world: World | None = None, progress: bool = False,
             announce: Progress | None = None) -> tuple[dict[str, Any], torch.Tensor] | tuple[None, None]:
    """Returns (results as a JSON-ready dict, the generated uint8 images (N, C, H, W), class-major) on rank 0;
    (None, None) on the other ranks of a torchrun world, which only sample and extract their share.
    `progress`: bars with an ETA for sampling and feature extraction (rank 0's share under torchrun).
    `announce` (default: `log`): how long a reference pass not yet cached will take, before it starts."""
    world = world or World()
    if not world.is_main:
        log = lambda _: None  # noqa: E731
        progress = False
    announce = announce or log
    sampling = run.effective_sampling(settings.sampling)  # a bad step count fails before any work
    real = load_reference(run, settings, cache_dir, progress)
    real_images = real.images  # (R, C, H, W) uint8
    if 0 < settings.max_real < len(real_images):  # the same subset every time: seeded by the sampling seed
        keep = torch.randperm(len(real_images), generator=torch.Generator().manual_seed(settings.sampling.seed))
        real_images = real_images[keep[:settings.max_real].sort().values]
    if classifier is not None:
        cc, mc = classifier.config, run.config.model
        if (cc.image_size, cc.channels) != (mc.image_size, mc.channels):
            raise UserError(f"the classifier takes {cc.channels}x{cc.image_size}x{cc.image_size} images, the run makes "
                            f"{mc.channels}x{mc.image_size}x{mc.image_size}; train a classifier at the run's size")
        if [n.lower() for n in cc.class_names] != [n.lower() for n in run.class_names]:
            raise UserError(f"the classifier knows {cc.class_names}, the run {run.class_names}; train it on the run's data")
    is_net = InceptionProbabilities(settings.inception_weights) if settings.inception_weights else None
    k = len(run.class_names)
    per_class = math.ceil(settings.num_samples / k)
    out: dict[str, Any] = {"settings": settings.to_dict(sampling), "checkpoint_step": run.step, "classes": run.class_names,
                           "num_generated": per_class * k, "num_real": len(real_images), "metrics": {}, "seconds": {},
                           "warnings": []}
    timings, results = out["seconds"], out["metrics"]

    t0 = time.perf_counter()
    log(f"sampling {per_class} images for each of {k} classes ({sampling.sampler.value}, {sampling.steps} steps, "
        f"guidance {sampling.guidance})")
    total = per_class * k
    lo, hi = world.rank * total // world.world_size, (world.rank + 1) * total // world.world_size  # this rank's share
    cond = torch.arange(k).repeat_interleave(per_class)[lo:hi]
    index = torch.arange(per_class).repeat(k)[lo:hi]  # image j of each class, seeded by (seed, j)
    with SamplingBar(len(cond), sampling.batch_size, sampling.steps, "eval: sample", progress) as step_bar:
        mine = to_uint8(run.sample_pairs(cond, index, sampling, callback=step_bar))
    gathered = _gather(world, mine)
    fake = mine if gathered is None else gathered  # on rank 0: (K * per_class, C, H, W), class-major
    wanted = torch.arange(k).repeat_interleave(per_class)
    timings["sampling"] = time.perf_counter() - t0

    if classifier is not None:
        t_clf = time.perf_counter()
        probs = _gather(world, _extract(classifier.probabilities, mine, sampling.batch_size))
        fake_pooled = _gather(world, _extract(classifier.pooled_features, mine, 256))
        t_clf = time.perf_counter() - t_clf
    if settings.inception:
        net = InceptionFeatures(precision=settings.feature_precision).to(run.device)  # on the run's device
        if note := precision_note(settings.feature_precision, run.device):
            log(note)
        t_gen = time.perf_counter()
        log(f"Inception features of {total} generated images ({settings.feature_precision})")
        gen = _gather(world, _extract(net, mine, INCEPTION_BATCH, "eval: Inception features of generated images", progress))
        t_gen = time.perf_counter() - t_gen
    if is_net is not None:
        t_is = time.perf_counter()
        is_probs = _gather(world, _extract(is_net, mine, INCEPTION_BATCH))
        t_is = time.perf_counter() - t_is
    if not world.is_main:
        return None, None

    if classifier is not None:
        t0 = time.perf_counter()
        probs = probs.double()  # (N, K)
        acc = metrics.per_class_accuracy(probs.argmax(1), wanted, k)
        results["per_class_accuracy"] = dict(zip(run.class_names, acc))
        results["accuracy"] = float((probs.argmax(1) == wanted).double().mean())
        results["classifier_test_accuracy"] = classifier.config.test_accuracy
        mean, std = metrics.inception_score(probs, splits=min(10, len(probs)), seed=sampling.seed)
        results["classifier_score"] = {"mean": mean, "std": std, "max": k}
        ref, _ = reference_features(classifier.name, classifier.pooled_features, real_images, 256, cache_dir,
                                    {"split": settings.split}, announce)
        results["classifier_fid"] = metrics.frechet_distance(ref, fake_pooled)
        timings["classifier"] = t_clf + time.perf_counter() - t0

    if settings.inception:
        t0 = time.perf_counter()
        with bar(len(real_images), "eval: Inception features of real images", "img", progress) as b:
            ref, hit = reference_features(net.name, net, real_images, INCEPTION_BATCH, cache_dir,
                                          {"split": settings.split}, announce, b.update)
        timings["inception_reference" + ("_cached" if hit else "")] = time.perf_counter() - t0
        timings["inception_generated"] = t_gen
        t0 = time.perf_counter()
        results["fid"] = metrics.frechet_distance(ref, gen)
        timings["fid"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        mean, std = metrics.kernel_inception_distance(ref, gen, settings.kid_subsets, settings.kid_subset_size, sampling.seed)
        size = metrics.kid_subset_size(settings.kid_subset_size, len(ref), len(gen), settings.kid_subsets)
        results["kid"] = {"mean": mean, "std": std, "subset_size": size, "subsets": settings.kid_subsets}
        timings["kid"] = time.perf_counter() - t0

    if is_net is not None:
        t0 = time.perf_counter()
        mean, std = metrics.inception_score(is_probs, splits=min(10, len(fake)), seed=sampling.seed)
        results["inception_score"] = {"mean": mean, "std": std}
        timings["inception_score"] = t_is + time.perf_counter() - t0

    if run.conditioning == "text" and run.config.data.source == SHAPES_TEXT:
        t0 = time.perf_counter()
        log("prompt faithfulness: captions of seen and held-out colour-shape pairs (evaluation/faithfulness.py)")
        results["faithfulness"] = prompt_faithfulness(run, sampling, cache_dir).to_dict()
        timings["faithfulness"] = time.perf_counter() - t0
    elif (run.conditioning == "text" and run.config.model.channels == 3
          and (prompts := colour_prompts(run.run_captions()))):
        t0 = time.perf_counter()
        log(f"colour words: {len(prompts)} captions that name a colour, one image each (evaluation/faithfulness.py)")
        images = run.sample_each(prompts, sampling)
        results["colour_words"] = colour_words(to_uint8(images), prompts)
        timings["colour_words"] = time.perf_counter() - t0

    if "fid" in results or "classifier_fid" in results:
        n = min(len(fake), len(real_images))
        if n < UNBIASED_FID_SAMPLES:
            out["warnings"].append(f"FID and KID from {len(fake)} generated and {len(real_images)} real images: FID is biased "
                                   f"upward at small N (KID is not, but is noisy); compare numbers only at equal N")
    return out, fake


def prompt_faithfulness(run: TrainedModel, sampling: SamplingConfig, cache_dir: Path | None = None,
                        callback: Callable[..., None] | None = None, scenes: EvalScenes | None = None
                        ) -> FaithfulnessReport:
    """One image for the first caption of each evaluation scene (default: eval_scenes(), the fixed seen and held-out
    ones), each from its own noise (TrainedModel.sample_each), scored by evaluation/faithfulness.py: does the
    picture show the colours, shapes, count and places it names?"""
    chosen = scenes or eval_scenes()
    images = run.sample_each(chosen.prompts, sampling, callback=callback)
    return faithfulness(to_uint8(images), chosen.scenes, cache_dir=cache_dir)


def _extract(fn, images: torch.Tensor, batch_size: int, desc: str = "", progress: bool = False) -> torch.Tensor | None:
    """extract() on this rank's share, with a bar when `progress`; None for an empty share (more ranks than images)."""
    if not len(images):
        return None
    with bar(len(images), desc, "img", progress) as b:
        return extract(fn, images, batch_size, progress=b.update)


def _gather(world: World, mine: torch.Tensor | None) -> torch.Tensor | None:
    """Every rank's share concatenated in rank order on rank 0 (the global order); None on the other ranks."""
    shares = gather_to_main(world, mine)
    if shares is None:
        return None
    return torch.cat([s for s in shares if s is not None])


def evaluate_checkpoint(checkpoint: str | Path, settings: EvalSettings, classifier: str | Path | None = None,
                        device: torch.device | str = "cpu", cache_dir: Path | None = None, log: Progress = lambda _: None,
                        progress: bool = False) -> tuple[dict[str, Any], torch.Tensor] | tuple[None, None]:
    """`evaluate` on a run directory or checkpoint, on one process or every rank of a torchrun world: each rank
    samples and extracts its share, rank 0 measures and returns the results (the others return (None, None) and
    report nothing)."""
    world, device = init(torch.device(device), "eval")
    try:
        clf = load_classifier(classifier, device) if classifier else None
        run = load_run(checkpoint, device=device)
        with warnings.catch_warnings():
            if not world.is_main:  # rank 0 alone reports
                warnings.simplefilter("ignore")
            return evaluate(run, settings, clf, cache_dir, log=log, world=world, progress=progress)
    finally:
        shutdown(world)
