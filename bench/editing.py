"""Editing on a trained run, measured with the domain classifier (issue 20; docs/editing.md).

    OMP_NUM_THREADS=1 .venv/bin/python bench/editing.py --checkpoint runs/demo --classifier clf.safetensors \
        --out bench-out/editing --pictures docs

Image to image: the first --count held-out (test split) images of --source are edited towards --target at each
strength. Per strength: the classifier's share of results it calls --target (and still --source), and how much of
the input survives, as the RMS pixel distance (pixels in [0, 1]) between each result and its input; the same
distance between the inputs and the first --count held-out images of --target is the scale of "nothing survives".

Inpainting: --per-class held-out images of every class, the first half with the left half of the picture generated,
the other half with the right half, each towards its own class, for each RePaint setting (--resampling: jump x
repeats; repeats 1 is replacement without resampling). Per setting: the classifier's accuracy (own class) and the
classifier-feature FID of the results against the whole held-out split (the unedited inputs give the floor of both
at this N; FID is biased upward at small N: compare rows only at equal N); the seam, the mean step in brightness
across the mask's edge (the inputs give the natural value); the RMS distance of the generated half to the original
(a plausible completion need not be the original: a scale, not a score).

Image j of every row starts from the noise of (seed, j); the same images and seeds for every setting. --pictures
writes docs/editing-img2img.png, docs/editing-inpaint.png and docs/editing-morph.gif (small).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch

from ddpm.api import load_run
from ddpm.common.pixels import to_model_range, to_uint8
from ddpm.data.dataset import load_dataset
from ddpm.diffusion.editing import Inpainting, inpainting_steps
from ddpm.diffusion.sampling import SamplingConfig
from ddpm.evaluation import metrics
from ddpm.evaluation.classifier import load_classifier
from ddpm.evaluation.features import extract
from ddpm.pictures.editing import masked, save_morph
from ddpm.pictures.grid import make_grid


def rms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image RMS distance of uint8 images (N, C, H, W), pixels scaled to [0, 1]. (N,)"""
    return ((a.float() - b.float()) / 255).pow(2).flatten(1).mean(1).sqrt()


def seam(images: torch.Tensor) -> float:
    """Mean |x[..., c - 1] - x[..., c]| across the mask's edge at column c = S / 2 (pixels in [0, 1]): how abruptly a
    generated half meets the kept one; the unedited images give the natural value."""
    c = images.shape[-1] // 2
    return float(((images[..., c - 1].float() - images[..., c].float()).abs() / 255).mean())


def image_to_image(run, clf, held, args) -> tuple[list[dict], torch.Tensor]:
    names = run.class_names
    src, dst = names.index(args.source), names.index(args.target)
    inputs = held.images[held.labels == src][: args.count]
    others = held.images[held.labels == dst][: args.count]
    rows, pictures = [], [inputs[: args.show]]
    for strength in args.strengths:
        t0 = time.perf_counter()
        out = to_uint8(run.edit(inputs, args.target, n=1, strength=strength, seed=args.seed).images)
        seconds = time.perf_counter() - t0
        predicted = clf.probabilities(out).argmax(1)
        d = rms(out, inputs)
        rows.append({"strength": strength, "target_accuracy": float((predicted == dst).float().mean()),
                     "still_source": float((predicted == src).float().mean()), "rms_to_input": float(d.mean()),
                     "rms_to_input_std": float(d.std()), "seconds": seconds})
        print(json.dumps(rows[-1]), flush=True)
        pictures.append(out[: args.show])
    scale = rms(others, inputs)
    base = clf.probabilities(inputs).argmax(1)
    rows.insert(0, {"strength": 0.0, "target_accuracy": float((base == dst).float().mean()),
                    "still_source": float((base == src).float().mean()), "rms_to_input": 0.0,
                    "rms_to_input_std": 0.0, "rms_held_out_target_to_input": float(scale.mean())})
    grid = torch.stack(pictures, 1).flatten(0, 1)  # (show * (1 + strengths), C, H, W): one row per input
    return rows, grid


def inpainting(run, clf, held, args) -> tuple[list[dict], torch.Tensor]:
    k, c = len(run.class_names), run.config.model
    pick = torch.cat([torch.nonzero(held.labels == y).flatten()[: args.per_class] for y in range(k)])
    images, labels = held.images[pick], held.labels[pick]
    generate = torch.zeros(len(pick), 1, c.image_size, c.image_size, dtype=torch.bool)
    left = (torch.arange(len(pick)) % args.per_class) < args.per_class // 2  # first half of each class: left
    generate[left, ..., : c.image_size // 2] = True
    generate[~left, ..., c.image_size // 2:] = True
    index = torch.arange(len(pick)) % args.per_class  # image j of each class: the noise of (seed, j)
    reference = extract(clf.pooled_features, held.images, 256)
    rows = [{"setting": "inputs (no edit)", "accuracy": float((clf.probabilities(images).argmax(1) == labels).float().mean()),
             "classifier_fid": metrics.frechet_distance(reference, extract(clf.pooled_features, images, 256)),
             "seam": seam(images)}]
    show = torch.cat([torch.nonzero(labels == y).flatten()[[0, args.per_class - 1]] for y in range(0, k, 3)])
    pictures = [masked(images[show], generate[show])]
    for jump, repeats in args.resampling:
        guide = Inpainting(to_model_range(images), ~generate, jump, repeats)
        t0 = time.perf_counter()
        out = to_uint8(run.sample_pairs(labels, index, seed=args.seed, guide=guide))  # the path of run.inpaint
        seconds = time.perf_counter() - t0
        assert torch.equal(torch.where(generate, images, out), images)  # the known pixels, exactly
        rows.append({"setting": f"jump {jump}, repeats {repeats}", "jump": jump, "repeats": repeats,
                     "accuracy": float((clf.probabilities(out).argmax(1) == labels).float().mean()),
                     "classifier_fid": metrics.frechet_distance(reference, extract(clf.pooled_features, out, 256)),
                     "seam": seam(out), "rms_generated_to_original": float(rms(out, images).mean() * 2 ** 0.5),
                     "network_evaluations": inpainting_steps(run.effective_sampling(SamplingConfig()).steps, jump, repeats),
                     "seconds": seconds})
        print(json.dumps(rows[-1]), flush=True)
        pictures.append(out[show])
    grid = torch.stack(pictures, 1).flatten(0, 1)
    return rows, grid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/demo")
    p.add_argument("--classifier", required=True)
    p.add_argument("--source", default="cat")
    p.add_argument("--target", default="dog")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--strengths", default="0.3,0.5,0.7,0.9")
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--resampling", default="5x1,5x3", help="RePaint settings, jump x repeats, comma-separated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show", type=int, default=4, help="inputs shown in the image-to-image picture")
    p.add_argument("--skip", default="", help="img2img and/or inpaint, comma-separated")
    p.add_argument("--out", type=Path, default=Path("bench-out/editing"))
    p.add_argument("--pictures", type=Path, default=None, help="write the docs' pictures into this folder")
    args = p.parse_args()
    args.strengths = [float(s) for s in args.strengths.split(",")]
    args.resampling = [tuple(int(v) for v in s.split("x")) for s in args.resampling.split(",")]
    skip = set(filter(None, args.skip.split(",")))

    torch.manual_seed(0)
    run = load_run(args.checkpoint)
    clf = load_classifier(args.classifier)
    c = run.config.model
    held = load_dataset(run.config.data.source, c.image_size, c.channels, "test", options=run.config.data)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"checkpoint": str(args.checkpoint), "checkpoint_step": run.step, "classifier": str(args.classifier),
              "classifier_test_accuracy": clf.config.test_accuracy, "date": str(date.today()),
              "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "sampling": "the defaults of ddpm sample (ddpm, 50 steps, guidance 3)", "seed": args.seed}
    if "img2img" not in skip:
        result["image_to_image"], grid = image_to_image(run, clf, held, args)
        if args.pictures:
            make_grid(grid, nrow=1 + len(args.strengths), scale=3).save(args.pictures / "editing-img2img.png")
    if "inpaint" not in skip:
        result["inpainting"], grid = inpainting(run, clf, held, args)
        if args.pictures:
            make_grid(grid, nrow=1 + len(args.resampling), scale=3).save(args.pictures / "editing-inpaint.png")
    if args.pictures:
        morph = run.interpolate(args.source, args.target, 9, seed_a=args.seed)
        save_morph(to_uint8(morph.frames), args.pictures / "editing-morph.gif", scale=3)[1].save(
            args.pictures / "editing-morph.png")
    (args.out / "editing.json").write_text(json.dumps({**result, "args": {k: str(v) for k, v in vars(args).items()}},
                                                      indent=2))
    print(f"wrote {args.out / 'editing.json'}")


if __name__ == "__main__":
    main()
