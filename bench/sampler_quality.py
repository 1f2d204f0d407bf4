"""FID against network evaluations (NFE) for DDPM, DDIM and DPM-Solver++(2M) on a trained run (issue 7, part 2).

    .venv/bin/python bench/sampler_quality.py                                   # runs/demo, 20 images per class
    .venv/bin/python bench/sampler_quality.py --checkpoint runs/demo --classifier clf.safetensors --per-class 50
    .venv/bin/python bench/sampler_quality.py --configs ddim:20,dpm++2m:20 --no-inception --classifier clf.safetensors

Every config draws the same (class, j) pairs, and image j of a class starts from the noise seeded by (seed, j) whatever
the sampler, so rows differ by their sampler, not by their starting noise. FID is on the project's offline Inception
features (ddpm.evaluation) against the run's test split (1,000 real images; their features are cached, as for
`ddpm eval`). With --classifier (a file from `ddpm classifier train`) the table adds the classifier-feature FID and
the per-class accuracy.

NFE = network calls per image, counted with a forward hook on the network. Under guidance (w not 0 or 1) each call
is one forward of the doubled batch [x; x] with classes [c; null] and counts as one evaluation (it costs about two
images' compute). FID is biased upward at small N, and noisy: compare rows only at equal N, as ratios to DDPM-1000.

With --json each row's per-image features are kept beside it, and a second table gives each row's FID, classifier
FID and per-class accuracy minus those of --paired-to (default ddpm:50, the ancestral baseline of issue 19), with the
std of that difference over bootstrap resamples of the images, the same resample for both rows: rows share their
starting noise, so most of either row's own sampling noise cancels in the difference.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

from ddpm.api import load_run
from ddpm.common.pixels import to_uint8
from ddpm.evaluation import metrics
from ddpm.evaluation.classifier import load_classifier
from ddpm.evaluation.evaluate import INCEPTION_BATCH, EvalSettings, load_reference
from ddpm.evaluation.features import InceptionFeatures, extract
from ddpm.evaluation.refcache import reference_features
from ddpm.diffusion.sampling import SAMPLERS, SamplingConfig

DEFAULT_CONFIGS = "dpm++2m:10,dpm++2m:20,ddim:10,ddim:20,ddim:50,ddim:100,ddpm:50,ddpm:1000"
BASELINE = ("ddpm", 1000)


def parse_configs(text: str) -> list[tuple[str, int]]:
    """"ddim:20,dpm++2m:10" -> [("ddim", 20), ("dpm++2m", 10)]."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, steps = item.rpartition(":")
        if name not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
            raise SystemExit(f"bad config {item!r}: expected SAMPLER:STEPS with SAMPLER in {', '.join(SAMPLERS)}")
        out.append((name, int(steps)))
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/demo", help="run directory or checkpoint file")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated SAMPLER:STEPS, run in this order")
    ap.add_argument("--per-class", type=int, default=20, help="generated images per class (N = this x classes)")
    ap.add_argument("--guidance", type=float, default=3.0, help="guidance weight w")
    ap.add_argument("--seed", type=int, default=0, help="image j of each class is seeded by (seed, j)")
    ap.add_argument("--batch-size", type=int, default=100, help="images per network call (before guidance doubles it)")
    ap.add_argument("--classifier", type=Path, default=None, help="domain classifier file: classifier FID and accuracy")
    ap.add_argument("--no-inception", action="store_true", help="skip the Inception FID (slow on a CPU)")
    ap.add_argument("--cache-dir", type=Path, default=None, help="reference-feature cache (default $DDPM_CACHE_DIR or ~/.cache/ddpm)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--real-floor", action="store_true",
                    help="add a row for N real train-split images (per class, in file order): the FID of real data at this N")
    ap.add_argument("--json", type=Path, default=None,
                    help="write the rows here after every config; rows already in it for the same checkpoint, N, "
                         "guidance and seed are reused, not measured again (add configs to an earlier run)")
    ap.add_argument("--paired-to", default="ddpm:50",
                    help="with --json: each row's FID, classifier FID and accuracy minus this config's, with the std of "
                         "the difference by a paired bootstrap over the images (the sampler choice of issue 19)")
    ap.add_argument("--draws", type=int, default=100, help="bootstrap resamples for --paired-to")
    args = ap.parse_args()
    configs = parse_configs(args.configs)
    settings = {"checkpoint": str(args.checkpoint), "per_class": args.per_class, "guidance": args.guidance,
                "seed": args.seed}
    done = earlier_rows(args.json, settings)

    run = load_run(args.checkpoint, device=args.device)
    real = load_reference(run, EvalSettings(), args.cache_dir)  # the run's test split, uint8 (N, C, H, W)
    k = len(run.class_names)
    n = args.per_class * k
    print(f"# {args.checkpoint} (step {run.step}), {run.config.diffusion.schedule} schedule, T = {run.schedule.num_steps}; "
          f"{n} generated ({args.per_class} per class) vs {len(real)} real test images; guidance {args.guidance}, "
          f"seed {args.seed}; {machine()}; {date.today()}", flush=True)
    if n < 10_000:
        print(f"warning: FID from {n} generated images is biased upward (roughly like 1/N) and noisy; compare rows only "
              "with each other, at this N", flush=True)

    inception = None if args.no_inception else InceptionFeatures().to(args.device)
    say = lambda line: print(line, flush=True)  # noqa: E731
    if inception is not None:  # the whole test split, through the cache `ddpm eval` and training's evaluations use
        ref_incep, hit = reference_features(inception.name, inception, real.images, INCEPTION_BATCH, args.cache_dir,
                                            {"split": "test"}, say)
        print(f"Inception features of the real images: {'cached' if hit else 'computed'}", flush=True)
    clf = load_classifier(args.classifier, args.device) if args.classifier else None
    if clf is not None:
        ref_clf, _ = reference_features(clf.name, clf.pooled_features, real.images, 256, args.cache_dir,
                                        {"split": "test"}, say)

    calls = [0]
    run.model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    wanted = torch.arange(k).repeat_interleave(args.per_class)  # class-major, as run.sample returns them
    rows = []
    if args.real_floor:
        configs = [("real", 0)] + configs
    for sampler, steps in configs:
        if (sampler, steps) in done:
            rows.append(done[sampler, steps])
            print(f"  {sampler} {steps}: from {args.json}", flush=True)
            continue
        calls[0] = 0
        t0 = time.perf_counter()
        if sampler == "real":
            images = real_images(run, args.per_class, args.cache_dir)
        else:
            sampling = SamplingConfig(sampler=sampler, steps=steps, guidance=args.guidance, seed=args.seed,
                                      batch_size=args.batch_size)
            images = to_uint8(run.sample(None, args.per_class, sampling))
        row = {"sampler": sampler, "steps": steps, "nfe": calls[0] / math.ceil(n / args.batch_size),
               "sample_s": time.perf_counter() - t0}
        feats = {}
        if inception is not None:
            t0 = time.perf_counter()
            feats["fid"] = extract(inception, images, INCEPTION_BATCH)
            row["fid"] = metrics.frechet_distance(ref_incep, feats["fid"])
            row["inception_s"] = time.perf_counter() - t0
        if clf is not None:
            probs = extract(clf.probabilities, images, 256)
            feats["clf_fid"] = extract(clf.pooled_features, images, 256)
            feats["correct"] = (probs.argmax(1) == wanted).float()
            row["clf_fid"] = metrics.frechet_distance(ref_clf, feats["clf_fid"])
            row["accuracy"] = float(feats["correct"].mean())
        if args.json:  # per-image features, for the paired error bars (features_path)
            path = features_path(args.json, sampler, steps)
            path.parent.mkdir(exist_ok=True)
            torch.save(feats, path)
        rows.append(row)
        print("  " + ", ".join(f"{key} {v:.4g}" if isinstance(v, float) else f"{key} {v}" for key, v in row.items()), flush=True)
        if args.json:
            kept = [r for key, r in done.items() if key not in {(q["sampler"], q["steps"]) for q in rows}]
            args.json.write_text(json.dumps({**settings, "machine": machine(), "date": str(date.today()),
                                             "rows": kept + rows}, indent=1))
    print_table(rows)
    if args.json and args.paired_to:
        refs = {"fid": ref_incep if inception is not None else None, "clf_fid": ref_clf if clf is not None else None}
        print_paired(args.json, rows, parse_configs(args.paired_to)[0], refs, args.draws)


def print_paired(json_path: Path, rows: list[dict], base: tuple[str, int], refs: dict, draws: int) -> None:
    """Differences to the `base` row with their paired-bootstrap std, for the rows whose features were kept."""
    paths = {(r["sampler"], r["steps"]): features_path(json_path, r["sampler"], r["steps"]) for r in rows}
    kept = {k: torch.load(p) for k, p in paths.items() if p.is_file()}
    if base not in kept:
        return
    scorers = frechet_scorers(refs)
    idx = resamples(kept[base], draws)
    ref = resampled(scorers, kept[base], idx)  # the baseline's bootstrap values, computed once for every row
    print(f"\n| sampler | steps | NFE | FID - {base[0]}-{base[1]} | classifier FID - | accuracy - |\n|" + " --- |" * 6)
    for r in rows:
        key = (r["sampler"], r["steps"])
        if key == base or key not in kept:
            continue
        d = differences(ref, resampled(scorers, kept[key], idx))
        cells = [f"{d[m][0] * scale:+.2f} ± {d[m][1] * scale:.2f}" if m in d else "-"
                 for m, scale in (("fid", 1), ("clf_fid", 1), ("accuracy", 100))]
        print(f"| {r['sampler']} | {r['steps']} | {r['nfe']:g} | {cells[0]} | {cells[1]} | {cells[2]} pt |")
    print(f"(± the std over {draws} paired bootstrap resamples of the {len(idx[0])} images)")
    sys.stdout.flush()


def features_path(json_path: Path, sampler: str, steps: int) -> Path:
    """Where a row's per-image features are kept: beside the --json file, one .pt a row."""
    return json_path.with_name(json_path.stem + "-features") / f"{sampler}-{steps}.pt"


class FrechetToFixed:
    """FID against a fixed reference set, fast enough to bootstrap: with S_r's square root R computed once,
        FID = |mu_r - mu_g|^2 + tr S_r + tr S_g - 2 tr sqrt(R S_g R)
    (tr sqrt(S_r S_g) = tr sqrt(R S_g R), the latter symmetric PSD: a sum of sqrt of eigvalsh). float64."""

    def __init__(self, real: torch.Tensor) -> None:
        real = real.double()
        self.mu = real.mean(0)
        cov = torch.cov(real.T)
        w, v = torch.linalg.eigh(cov)
        self.root = (v * w.clamp_min(0).sqrt()) @ v.T  # (D, D)
        self.trace = cov.trace()

    def __call__(self, fake: torch.Tensor) -> float:
        fake = fake.double()
        cov = torch.cov(fake.T)
        mid = torch.linalg.eigvalsh(self.root @ cov @ self.root).clamp_min(0).sqrt().sum()
        return float((self.mu - fake.mean(0)).square().sum() + self.trace + cov.trace() - 2 * mid)


Resampled = dict[str, tuple[float, torch.Tensor]]  # metric -> (value on all images, (draws,) values on resamples)


def frechet_scorers(refs: dict[str, torch.Tensor | None]) -> dict[str, FrechetToFixed]:
    """One FrechetToFixed per reference set given ("fid": Inception, "clf_fid": the classifier's features)."""
    return {k: FrechetToFixed(v) for k, v in refs.items() if v is not None}


def resamples(feats: dict[str, torch.Tensor], draws: int, seed: int = 0) -> list[torch.Tensor]:
    """`draws` bootstrap resamples of a row's N image indices; the same list serves every row (pairing)."""
    n = len(next(iter(feats.values())))
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, n, (n,), generator=g) for _ in range(draws)]


def resampled(scorers: dict[str, FrechetToFixed], feats: dict[str, torch.Tensor], idx: list[torch.Tensor]) -> Resampled:
    """A row's FIDs (per scorer) and accuracy ("correct": per image 0/1) on all its images and on each resample."""
    out = {k: (fid(feats[k]), torch.tensor([fid(feats[k][i]) for i in idx]))
           for k, fid in scorers.items() if k in feats}
    if "correct" in feats:
        out["accuracy"] = (float(feats["correct"].mean()), torch.stack([feats["correct"][i].mean() for i in idx]))
    return out


def differences(base: Resampled, other: Resampled) -> dict[str, tuple[float, float]]:
    """other - base per metric, and the std over the resamples of that difference (the same indices for both)."""
    return {k: (other[k][0] - base[k][0], float((other[k][1] - base[k][1]).std())) for k in base if k in other}


def paired_differences(refs: dict[str, torch.Tensor], base: dict, other: dict, draws: int, seed: int = 0
                       ) -> dict[str, tuple[float, float]]:
    """Each metric of `other` minus `base` (the same images j, drawn from the same noise) and the std of that
    difference over `draws` bootstrap resamples of the image indices, the same indices for both rows: the error of
    a difference between two samplers, not of either alone."""
    scorers, idx = frechet_scorers(refs), resamples(base, draws, seed)
    return differences(resampled(scorers, base, idx), resampled(scorers, other, idx))


def real_images(run, per_class: int, cache_dir: Path | None) -> torch.Tensor:
    """The first `per_class` train-split images of each class, class-major: real data as a floor for FID at this N."""
    train = load_reference(run, EvalSettings(split="train"), cache_dir)
    picks = [torch.nonzero(train.labels == c).flatten()[:per_class] for c in range(len(run.class_names))]
    return torch.as_tensor(train.images[torch.cat(picks)])


def earlier_rows(path: Path | None, settings: dict) -> dict[tuple[str, int], dict]:
    """Rows of an earlier run written to `path` with the same settings, by (sampler, steps)."""
    if path is None or not path.is_file():
        return {}
    old = json.loads(path.read_text())
    if any(old.get(key) != value for key, value in settings.items()):
        raise SystemExit(f"{path} holds rows for other settings; give another --json")
    return {(r["sampler"], r["steps"]): r for r in old["rows"]}


def print_table(rows: list[dict]) -> None:
    """Markdown table; FID columns also as a ratio to the DDPM-1000 row when there is one."""
    base = next((r for r in rows if (r["sampler"], r["steps"]) == BASELINE), None)
    cols = [("fid", "FID"), ("clf_fid", "classifier FID")]
    cols = [(key, name) for key, name in cols if key in rows[0]]
    head = ["sampler", "steps", "NFE", "sampling s"] + [h for key, name in cols for h in (name, f"{name} / DDPM-1000")]
    if "accuracy" in rows[0]:
        head.append("per-class accuracy")
    print("\n| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
    for r in rows:
        name = "real train images" if r["sampler"] == "real" else r["sampler"]
        cells = [name, str(r["steps"]), f"{r['nfe']:g}", f"{r['sample_s']:.0f}"]
        for key, _ in cols:
            cells += [f"{r[key]:.2f}", f"{r[key] / base[key]:.2f}" if base else "-"]
        if "accuracy" in r:
            cells.append(f"{r['accuracy']:.1%}")
        print("| " + " | ".join(cells) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
