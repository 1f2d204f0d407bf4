"""Issue 19: does bf16 Inception move FID less if some layers stay in fp32? FID of two 1,000-image sets under fp32,
under bf16 autocast, and under bf16 with the layers of a variant kept in fp32 (fastinception.py's layer indices:
0-2 the stem's 3x3 convolutions at 149-147 px, 18 the final average pool).

    .venv/bin/python bench/inception_bf16_layers.py --checkpoint runs/demo        # test split vs the run's samples
    .venv/bin/python bench/inception_bf16_layers.py                               # test split vs 1,000 train images

Prints each variant's FID, its difference to fp32's in percent, KID, and seconds for the 2,000 images. Meaningful
only on a CPU with native bf16 (elsewhere autocast is emulated and slow); it runs on the CPU.
"""

from __future__ import annotations

import argparse
import time

import torch

from ddpm.api import load_run
from ddpm.common.pixels import to_uint8
from ddpm.data.dataset import load_dataset
from ddpm.diffusion.sampling import EVAL_SAMPLING
from ddpm.evaluation import metrics
from ddpm.evaluation.features import InceptionFeatures, extract, inception_input

VARIANTS = {"fp32": set(range(19)), "bf16": set(), "bf16, stem 0-1 fp32": {0, 1}, "bf16, stem 0-2 fp32": {0, 1, 2},
            "bf16, stem 0-6 fp32": set(range(7)), "bf16, pool fp32": {18}, "bf16, blocks 16-18 fp32": {16, 17, 18},
            "bf16, blocks 15-18 fp32": {15, 16, 17, 18}}


def features_fn(layers: list[torch.nn.Module], fp32: set[int]):
    """uint8 images -> (N, 2048) features, layer i in fp32 if i in `fp32`, else under bf16 autocast."""
    @torch.no_grad()
    def run(images: torch.Tensor) -> torch.Tensor:
        x = inception_input(images).contiguous(memory_format=torch.channels_last)  # (N, 3, 299, 299)
        for i, layer in enumerate(layers):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=i not in fp32):
                x = layer(x.float() if i in fp32 else x)
        return x.float().flatten(1)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="", help="a run whose samples are the second set (else real train images)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    real = load_dataset("builtin:animal-shapes", 28, 1, "test").images[:args.n]
    if args.checkpoint:
        run = load_run(args.checkpoint)
        other = to_uint8(run.sample(None, -(-args.n // len(run.class_names)), EVAL_SAMPLING))[:args.n].cpu()
    else:
        other = torch.as_tensor(load_dataset("builtin:animal-shapes", 28, 1, "train").images[:args.n])
    layers = list(InceptionFeatures().net.layers)
    base = None
    for name in ["fp32", *(v for v in args.variants if v != "fp32")]:
        t0 = time.perf_counter()
        fn = features_fn(layers, VARIANTS[name])
        a, b = extract(fn, real, 50), extract(fn, other, 50)
        fid = metrics.frechet_distance(a, b)
        kid, kid_std = metrics.kernel_inception_distance(a, b, 100, min(1000, args.n // 2), 0)
        base = fid if base is None else base
        print(f"| {name} | {fid:.4f} | {100 * (fid - base) / base:+.2f}% | {kid:.5f} ± {kid_std:.5f} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
