"""Inception features for FID/KID: images/s of the file's own forward (the path before issue 19) against each option,
timed in the same alternating rounds, the GFLOP/s achieved against a 3x3 convolution's rate on the same machine in
the same rounds, and how far each option moves FID and KID.

    .venv/bin/python bench/eval_throughput.py                                  # CPU: options at ddpm eval's batch, 5 rounds
    .venv/bin/python bench/eval_throughput.py --checkpoint runs/demo --fid-n 1000   # FID/KID on the model's samples
    .venv/bin/python bench/eval_throughput.py --bf16 --fid-n 200               # + bf16 autocast (emulated: slow)

Contenders (each extracts features of the same batch of 28x28 grey images, the demo's, upsampled to 299):
    reference        InceptionFeatures(fast=False): the TorchScript file's forward, NCHW (the path before)
    reference-cl     the same with channels_last input
    reference-frozen torch.jit.freeze + optimize_for_inference of the file (its layers cast the weights to the
                     input's dtype at run time, so freezing cannot fold the batch norms)
    fast             InceptionFeatures(): fastinception.py (BN folded, 1x1s stacked, channels_last)
    fast-bN          the same at batch N (--batch-sizes)
    fast-Nthread     the same on one thread, or on every core with --threads 1 (thread use)
    fast-bf16        bf16 autocast (--bf16; CUDA: also fp16, and every fp32 contender with TF32 on)
    openvino-f32     (--openvino, CPU) the fast network converted to OpenVINO (not a dependency of ddpm:
                     `pip install openvino`), compiled with INFERENCE_PRECISION_HINT f32 (its default on a bf16 CPU
                     is bf16); openvino-bf16 as well with --bf16
    conv3x3-fp32-cl  forward of a 3x3 convolution 128 -> 128 at 32x32, batch 32, channels_last: the machine's rate
Rates are images/s (GFLOP/s for the convolution) per round; ratios are medians of per-round ratios to `reference`.
FLOPs: 2 per multiply-add, counted by torch.utils.flop_counter (11.42 GFLOP per 299x299 image; the issue's
"5.7 GFLOPs" counts multiply-adds).

FID/KID: the features of N real test images and of N other images (--checkpoint: the run's samples, drawn with the
evaluation's default sampler; else N real train images) under `reference` and under each option, and the relative
difference of FID and the difference of KID (against KID's std).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from ddpm.api import load_run
from ddpm.common.pixels import to_uint8
from ddpm.data.dataset import load_dataset
from ddpm.diffusion.sampling import EVAL_SAMPLING
from ddpm.evaluation import metrics
from ddpm.evaluation.evaluate import INCEPTION_BATCH
from ddpm.evaluation.features import InceptionFeatures, extract, inception_input
from ddpm.runtime.device import configure_device, cpu_threads
from sampler_quality import machine  # bench/ is on sys.path


def conv_rate_contender(device: torch.device) -> tuple[Callable[[], object], float]:
    """A 3x3 convolution forward, 128 -> 128 channels at 32x32, batch 32, channels_last, and its FLOPs."""
    b, c, s = 32, 128, 32
    conv = torch.nn.Conv2d(c, c, 3, padding=1).to(device=device, memory_format=torch.channels_last)
    x = torch.randn(b, c, s, s, device=device).contiguous(memory_format=torch.channels_last)
    return (lambda: conv(x)), 2.0 * b * c * c * 9 * s * s


class OpenVinoFeatures:
    """uint8 images (N, C, H, W) -> (N, 2048) features of the fast network run by OpenVINO's CPU plugin at
    `precision` (f32 or bf16) on torch's thread count."""

    def __init__(self, precision: str, example: torch.Tensor) -> None:
        import openvino as ov  # optional: only this bench uses it

        model = ov.convert_model(InceptionFeatures().net.eval(), example_input=inception_input(example))
        model.reshape([-1, 3, 299, 299])
        self.net = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                          "INFERENCE_NUM_THREADS": torch.get_num_threads(),
                                                          "PERFORMANCE_HINT": "LATENCY"})

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.net(inception_input(images).numpy())[0].copy()).flatten(1)


def openvino_paths(args, example: torch.Tensor) -> dict[str, OpenVinoFeatures]:
    """--openvino: f32, and bf16 with --bf16."""
    if not args.openvino:
        return {}
    return {f"openvino-{p}": OpenVinoFeatures(p, example) for p in ["f32", *(["bf16"] if args.bf16 else [])]}


def contenders(args, device: torch.device, images: torch.Tensor) -> dict[str, tuple[Callable[[], object], int]]:
    """name -> (one call, images per call)."""
    ref = InceptionFeatures(fast=False).to(device)
    fast = InceptionFeatures().to(device)
    b = args.batch_size
    x = images[:b].to(device)
    x_ref = inception_input(x)  # (B, 3, 299, 299) float32
    frozen = torch.jit.optimize_for_inference(torch.jit.freeze(InceptionFeatures(fast=False).net.eval())).to(device)
    out = {"reference": (lambda: ref(x), b),
           "reference-cl": (lambda: ref.net(x_ref.contiguous(memory_format=torch.channels_last)), b),
           "reference-frozen": (lambda: frozen(x_ref), b),
           "fast": (lambda: fast(x), b)}
    for n in args.batch_sizes:
        xn = images[:n].to(device)
        out[f"fast-b{n}"] = (lambda xn=xn: fast(xn), n)
    if device.type == "cpu":  # thread use: the fast path on the other count (1, or every core when on 1)
        other = 1 if torch.get_num_threads() > 1 else os.cpu_count() or 1

        def other_threads():
            with cpu_threads(other):
                return fast(x)
        out[f"fast-{other}thread"] = (other_threads, b)
    low = ["bf16"] if args.bf16 else []
    if device.type == "cuda":
        low = ["bf16", "fp16"]
    for p in low:
        net = InceptionFeatures(precision=p).to(device)
        out[f"fast-{p}"] = (lambda net=net: net(x), b)
    for name, net in openvino_paths(args, x[:1]).items():
        out[name] = (lambda net=net: net(x), b)
    out["resize-only"] = (lambda: inception_input(x), b)
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rounds(calls: dict[str, tuple[Callable[[], object], int]], n: int, device: torch.device) -> dict[str, list[float]]:
    """Per round, each call's units per second (images, or FLOPs for the convolution); order reversed every other
    round (as bench/rounds.py)."""
    for f, _ in calls.values():
        f()  # warm-up: oneDNN's kernel choice, the allocator
    sync(device)
    rates: dict[str, list[float]] = {k: [] for k in calls}
    names = list(calls)
    for r in range(n):
        for name in names if r % 2 == 0 else names[::-1]:
            f, units = calls[name]
            t0 = time.perf_counter()
            f()
            sync(device)
            rates[name].append(units / (time.perf_counter() - t0))
    return rates


def fid_kid(real: torch.Tensor, other: torch.Tensor, seed: int = 0) -> dict[str, float]:
    fid = metrics.frechet_distance(real, other)
    size = min(1000, len(real) // 2, len(other) // 2)  # subsets smaller than the sets, so that their std means something
    kid, kid_std = metrics.kernel_inception_distance(real, other, 100, size, seed)
    return {"fid": fid, "kid": kid, "kid_std": kid_std}


def quality(args, device: torch.device) -> dict[str, dict[str, float]]:
    """FID/KID of N real test images against N generated (or real train) images, under each feature path."""
    test = load_dataset("builtin:animal-shapes", 28, 1, "test").images[:args.fid_n]
    if args.checkpoint:
        run = load_run(args.checkpoint, device=device)
        k = len(run.class_names)
        other = to_uint8(run.sample(None, -(-args.fid_n // k), EVAL_SAMPLING))[:args.fid_n].cpu()
        what = f"{len(other)} samples of {args.checkpoint} ({EVAL_SAMPLING.sampler.value})"
    else:
        other = torch.as_tensor(load_dataset("builtin:animal-shapes", 28, 1, "train").images[:args.fid_n])
        what = f"{len(other)} real train images"
    print(f"# FID/KID: {len(test)} real test images vs {what}", flush=True)
    paths = {"reference": InceptionFeatures(fast=False), "fast": InceptionFeatures()}
    if args.bf16 or device.type == "cuda":
        paths["fast-bf16"] = InceptionFeatures(precision="bf16")
    if device.type == "cuda":
        paths["fast-fp16"] = InceptionFeatures(precision="fp16")
    paths.update(openvino_paths(args, torch.as_tensor(test[:1])))
    out = {}
    for name, net in paths.items():
        net = net.to(device) if isinstance(net, torch.nn.Module) else net
        t0 = time.perf_counter()
        out[name] = fid_kid(extract(net, test, args.batch_size), extract(net, other, args.batch_size))
        out[name]["seconds"] = time.perf_counter() - t0
        print(f"  {name}: " + ", ".join(f"{k} {v:.6g}" for k, v in out[name].items()), flush=True)
    base = out["reference"]
    for name, r in out.items():
        r["fid_rel_diff"] = (r["fid"] - base["fid"]) / base["fid"]
        r["kid_diff_in_std"] = (r["kid"] - base["kid"]) / base["kid_std"] if base["kid_std"] > 0 else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=INCEPTION_BATCH, help="images per call (ddpm eval's)")
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=[50], help="other batch sizes of the fast path")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--bf16", action="store_true", help="add bf16 autocast on a CPU (emulated without AVX512-BF16/AMX)")
    ap.add_argument("--openvino", action="store_true", help="add the fast network run by OpenVINO (CPU; pip install openvino)")
    ap.add_argument("--fid-n", type=int, default=1000, help="images per side of the FID/KID comparison (0: skip it)")
    ap.add_argument("--checkpoint", default="", help="a run whose samples are the FID/KID comparison's other side")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    configure_device(device)  # CUDA: TF32 for the fp32 contenders
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {machine()}; batch {args.batch_size}, {args.rounds} rounds", flush=True)
    gen = torch.Generator().manual_seed(0)
    test = load_dataset("builtin:animal-shapes", 28, 1, "test").images
    images = torch.as_tensor(test[torch.randperm(len(test), generator=gen)[:max([args.batch_size, *args.batch_sizes])]])
    with FlopCounterMode(display=False) as counter:
        InceptionFeatures()(images[:1].to(device))
    flops = counter.get_total_flops()  # per image, 2 per multiply-add
    calls = contenders(args, device, images)
    conv, conv_flops = conv_rate_contender(device)
    calls["conv3x3-fp32-cl"] = (conv, conv_flops)
    with torch.inference_mode():
        rates = rounds(calls, args.rounds, device)
    result = {"machine": machine(), "gflop_per_image": flops / 1e9, "batch_size": args.batch_size, "rounds": args.rounds,
              "rates": rates}
    conv_rate = statistics.median(rates["conv3x3-fp32-cl"]) / 1e9
    print(f"\n| contender | images/s median (min-max) | x reference (median of rounds) | GFLOP/s | of the conv rate |\n|"
          + " --- |" * 5)
    for name, r in rates.items():
        if name == "conv3x3-fp32-cl":
            print(f"| {name} | | | {conv_rate:.0f} | 100% |")
            continue
        ratio = statistics.median(a / b for a, b in zip(r, rates["reference"]))
        gflops = statistics.median(r) * flops / 1e9
        net = name != "resize-only"
        print(f"| {name} | {statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f}) | {ratio:.2f}x | "
              f"{f'{gflops:.0f}' if net else ''} | {f'{gflops / conv_rate:.0%}' if net else ''} |")
    if args.fid_n:
        result["quality"] = quality(args, device)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
