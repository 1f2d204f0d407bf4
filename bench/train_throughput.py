"""Training-step throughput of our UNet against diffusers' UNet2DModel at a matched parameter count, against the
machine's own 3x3-convolution throughput, with peak memory per image.

What is measured
    One training step as our trainer runs it (src/ddpm/training/loop.py): ``diffusion_loss`` (q_sample, forward,
    eps-MSE) under ``torch.autocast(bf16)`` when ``resolve_precision("auto", device)`` picks bf16, then
    ``zero_grad``, backward, ``clip_grad_norm_(foreach=True)`` and ``make_optimizer``'s AdamW step. Left out, for every
    contender alike: data loading, EMA update, logging. The peer is diffusers' ``UNet2DModel`` (class-conditional
    through ``num_class_embeds``, improved-DDPM scale-shift norm, attention at the same resolution as ours),
    wrapped to our ``model(x, t, c)`` signature and trained by the very same step. Contenders: ours at the
    trainer's precision, the peer in its usual fp32, the peer under the same autocast as ours. All see the same
    fixed random batch (x0 in [-1, 1], class ids in [0, num_classes]).

    The machine's convolution throughput: one 3x3 convolution (--conv-shape, default batch 32, 128 -> 128
    channels, 32x32) forward + backward (input and weight gradients), in bf16 and fp32, in the default and the
    channels_last memory format, timed in the same rounds as the models. 3 x 2 x B x Cin x Cout x 9 x H x W FLOPs.

    Timing: warm-up steps are excluded, then everything takes turns in rounds (A B C .., .. C B A, ...) so all
    share the machine's noise; each round gives one rate per contender. The table shows the median (and min-max)
    over rounds; the ratios are medians of per-round ratios, each pairing runs seconds apart.
    FLOPs per image of forward+backward come from ``FlopCounterMode`` (torch has no formula for CPU flash
    attention; it is given the generic SDPA one); GFLOP/s = FLOPs/img x median img/s.

    Peak memory per image. CPU (Linux): each contender runs in a fresh subprocess at batch B and at batch 2B;
    after setup the process's peak resident set is reset to its current RSS (/proc/self/clear_refs) and the
    first training step runs; rise = peak RSS - RSS before the step. (rise(2B) - rise(B)) / B is the marginal
    peak memory of one more image: activations kept for backward, their gradients, temporaries; what does not
    grow with the batch (weight gradients, optimiser state, kernel caches) cancels out.
    CUDA: (torch.cuda.max_memory_allocated during a step - memory allocated before it) / B, in process.

Run
    .venv/bin/python bench/train_throughput.py                         # 32x32x1, batch 32: ~3 min on 2 cores
    .venv/bin/python bench/train_throughput.py --size 64 --channels 3  # attention at 16 px as at 32 px at 8
    .venv/bin/python bench/train_throughput.py --size 32 64 --rounds 10 --checkpointing   # all of docs/benchmarks.md
    bench/gpu.sh                                                       # CUDA: bf16, TF32, fused AdamW, compile

Reading the ratios
    "ours/peer-fp32" compares against the peer as usually trained; "ours/peer-same" is like for like (same
    precision: the architecture and implementation alone). "ours/conv-bf16" is our achieved model FLOP/s over the
    best bf16 3x3-conv FLOP/s of the same run: how much of the machine's dense bf16 throughput the whole step
    (norms, activations, attention, optimiser included) achieves. Trust a ratio only as far as its min-max.
The last line printed per size is one JSON object with all numbers (for the docs).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import diffusers
import torch
from diffusers import UNet2DModel
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from ddpm.config import ModelConfig, RunConfig
from ddpm.diffusion.forward import diffusion_loss
from ddpm.network.unet import UNet, count_parameters
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.runtime.device import configure_device, resolve_precision
from ddpm.training.optim import make_optimizer

NUM_CLASSES = 10
aten = torch.ops.aten
GPU_BF16_DENSE_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


class PeerAdapter(nn.Module):
    """diffusers' UNet2DModel behind our eps-model signature model(x, t, c)."""

    def __init__(self, net: UNet2DModel) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.net(x, t, class_labels=c).sample


def build_ours(size: int, channels: int, checkpointing: bool = False) -> nn.Module:
    """1.74M parameters: widths 32-64-64, 2 blocks per level, attention at size / 4 and in the middle."""
    return UNet(ModelConfig(image_size=size, channels=channels, base_channels=32, channel_mults=(1, 2, 2),
                            num_res_blocks=2, attention_resolutions=(size // 4,), num_heads=4, num_classes=NUM_CLASSES,
                            checkpointing=checkpointing))


def build_large(size: int, channels: int, checkpointing: bool = False) -> nn.Module:
    """The README's 64 px model (widths 64-128-128-128, attention at size / 4 and size / 8): 9.9M parameters."""
    return UNet(ModelConfig(image_size=size, channels=channels, base_channels=64, channel_mults=(1, 2, 2, 2),
                            num_res_blocks=2, attention_resolutions=(size // 4, size // 8), num_heads=4,
                            num_classes=NUM_CLASSES, checkpointing=checkpointing))


def build_peer(size: int, channels: int) -> nn.Module:
    """The same widths, depth and attention placement in diffusers' blocks (parameters within 0.1% of ours)."""
    return PeerAdapter(UNet2DModel(
        sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(32, 64, 64),
        layers_per_block=2, down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=16, norm_num_groups=32,
        resnet_time_scale_shift="scale_shift", num_class_embeds=NUM_CLASSES + 1))  # + 1: the null class


# name -> (builder, precision: "trainer" = what `ddpm train` picks here, or fp32/bf16)
MODELS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "ours": (build_ours, "trainer"), "peer-fp32": (build_peer, "fp32"), "peer-bf16": (build_peer, "bf16"),
    "large": (build_large, "trainer"), "large+ckpt": (lambda s, c: build_large(s, c, checkpointing=True), "trainer"),
}
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # x0, cond, t, noise


@dataclass
class Contender:
    name: str
    run: Callable[[], None]  # one timed call
    work: float  # images per call (models) or FLOPs per call (convolutions)
    unit: str  # "img/s" or "GFLOP/s"
    rates: list[float] = field(default_factory=list)


@dataclass
class ModelRun:
    name: str
    model: nn.Module
    precision: str
    optimizer: torch.optim.Optimizer
    step: Callable[[], None]


def make_batch(b: int, channels: int, size: int, device: torch.device, channels_last: bool) -> Batch:
    gen = torch.Generator().manual_seed(0)
    shape = (b, channels, size, size)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x0 = (torch.rand(shape, generator=gen) * 2 - 1).contiguous(memory_format=fmt)
    noise = torch.randn(shape, generator=gen).contiguous(memory_format=fmt)
    cond, t = torch.randint(0, NUM_CLASSES + 1, (b,), generator=gen), torch.randint(0, 1000, (b,), generator=gen)
    if device.type == "cuda":  # as the trainer does: pinned host memory, copies that do not block the host
        return tuple(v.pin_memory().to(device, non_blocking=True) for v in (x0, cond, t, noise))  # type: ignore
    return x0, cond, t, noise


def make_model_run(name: str, size: int, channels: int, device: torch.device, batch: Batch, schedule: NoiseSchedule,
                   channels_last: bool = False, compile_model: bool = False) -> ModelRun:
    build, prec = MODELS[name]
    precision = resolve_precision("auto", device) if prec == "trainer" else prec
    torch.manual_seed(0)
    model = build(size, channels).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, RunConfig())
    net = torch.compile(model) if compile_model else model
    grad_clip = RunConfig().train.grad_clip

    def step() -> None:
        """The body of the trainer's loop (training/loop.py), minus data, EMA and logging."""
        x0, cond, t, noise = batch
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, _ = diffusion_loss(net, schedule, x0, cond, t, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
        optimizer.step()

    return ModelRun(name, model, precision, optimizer, step)


def flops_per_image(model: nn.Module, schedule: NoiseSchedule, batch: Batch, n: int = 4) -> float:
    """Forward + backward FLOPs of the loss per image, counted in fp32 on n images (FLOPs scale linearly with the
    batch). torch has no formula for CPU flash attention; it gets the one of the other SDPA kernels."""
    x0, cond, t, noise = (v[:n] for v in batch)
    extra = {  # the formulas receive shapes; (batch, heads, tokens, head dim) as for the other SDPA kernels
        aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *_, out_shape=None, **__: sdpa_flop_count(q, k, v),
        aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda g, q, k, v, *_, out_shape=None, **__: sdpa_backward_flop_count(g, q, k, v),
    }
    with FlopCounterMode(display=False, custom_mapping=extra) as counter:
        loss, _ = diffusion_loss(model, schedule, x0, cond, t, noise)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / n


def conv_contender(dtype: torch.dtype, channels_last: bool, shape: tuple[int, int, int], device: torch.device) -> Contender:
    """A 3x3 convolution, C -> C channels, forward and backward (input and weight gradients)."""
    b, c, s = shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    conv = nn.Conv2d(c, c, 3, padding=1).to(device=device, dtype=dtype, memory_format=fmt)
    x = torch.randn(b, c, s, s, device=device, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
    grad = torch.randn(b, c, s, s, device=device, dtype=dtype).contiguous(memory_format=fmt)

    def run() -> None:
        conv(x).backward(grad)
        conv.zero_grad(set_to_none=True)
        x.grad = None

    name = f"conv3x3-{'bf16' if dtype == torch.bfloat16 else 'fp32'}{'-cl' if channels_last else ''}"
    return Contender(name, run, 3 * 2 * b * c * c * 9 * s * s, "GFLOP/s")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rounds(contenders: list[Contender], rounds: int, warmup: int, device: torch.device) -> float:
    for c in contenders:
        for _ in range(warmup):
            c.run()
    sync(device)
    start = time.perf_counter()
    for r in range(rounds):
        for c in contenders if r % 2 == 0 else contenders[::-1]:  # no contender always goes first
            t0 = time.perf_counter()
            c.run()
            sync(device)
            c.rates.append(c.work / (time.perf_counter() - t0) / (1e9 if c.unit == "GFLOP/s" else 1))
    return time.perf_counter() - start


def paired(a: Contender, b: Contender) -> list[float]:
    """Sorted per-round ratios a/b: each pairs two measurements that saw the same stretch of machine noise."""
    return sorted(x / y for x, y in zip(a.rates, b.rates))


def memory_per_image(name: str, size: int, channels: int, b: int, device: torch.device) -> float:
    """Marginal peak memory of one image in bytes (see the module docstring)."""
    if device.type == "cuda":
        schedule = NoiseSchedule.create("linear", 1000)
        batch = make_batch(b, channels, size, device, False)
        run = make_model_run(name, size, channels, device, batch, schedule)
        run.step()  # optimiser state allocated
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run.step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / b
    peaks = []
    for batch_size in (b, 2 * b):
        cmd = [sys.executable, __file__, "--probe-memory", name, "--size", str(size), "--channels", str(channels),
               "--batch-size", str(batch_size),
               "--threads", str(torch.get_num_threads())]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        peaks.append(int(out.strip().splitlines()[-1]))
    return (peaks[1] - peaks[0]) / b


def probe_memory(name: str, size: int, channels: int, b: int) -> None:
    """In a fresh process: set up, reset the peak RSS (Linux: /proc/self/clear_refs), run the first training step;
    print in bytes how far the peak RSS rose above the RSS before the step."""
    schedule = NoiseSchedule.create("linear", 1000)
    device = torch.device("cpu")
    run = make_model_run(name, size, channels, device, make_batch(b, channels, size, device, False), schedule)
    before = _proc_status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    run.step()
    print((_proc_status_kib("VmHWM") - before) * 1024)


def _proc_status_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def gpu_peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    gpu = torch.cuda.get_device_name(device)
    return next((v for k, v in GPU_BF16_DENSE_TFLOPS.items() if k in gpu), None)


def run_size(args: argparse.Namespace, size: int, device: torch.device) -> dict:
    precision = resolve_precision("auto", device)  # what `ddpm train` would use here
    schedule = NoiseSchedule.create("linear", 1000)
    b = args.batch_size
    batch = make_batch(b, args.channels, size, device, args.channels_last)
    names = ["ours", "peer-fp32", "peer-bf16"] + (["large", "large+ckpt"] if args.checkpointing else [])
    runs = {n: make_model_run(n, size, args.channels, device, batch, schedule, args.channels_last,
                              args.compile and n == "ours") for n in names}
    models = [Contender(n, r.step, b, "img/s") for n, r in runs.items()]
    convs = [conv_contender(dt, cl, args.conv_shape, device) for dt in (torch.bfloat16, torch.float32)
             for cl in (False, True)]
    flops = {n: flops_per_image(r.model, schedule, batch) for n, r in runs.items()}
    params = {n: count_parameters(r.model) for n, r in runs.items()}
    threads = torch.get_num_threads()
    print(f"\n== {args.channels}x{size}x{size}, batch {b}, device {device} ({threads} threads), trainer precision "
          f"{precision}; torch {torch.__version__}, diffusers {diffusers.__version__}; {args.warmup} warm-up + "
          f"{args.rounds} rounds; conv shape (B, C, S) = {args.conv_shape}", flush=True)
    elapsed = timed_rounds(models + convs, args.rounds, args.warmup, device)
    mem = {} if args.no_memory else {n: memory_per_image(n, size, args.channels, b, device) for n in names}

    med = {c.name: statistics.median(c.rates) for c in models + convs}
    best_bf16 = max(("conv3x3-bf16", "conv3x3-bf16-cl"), key=lambda n: med[n])
    best_fp32 = max(("conv3x3-fp32", "conv3x3-fp32-cl"), key=lambda n: med[n])
    print(f"{'contender':<12}{'precision':>10}{'params':>12}{'img/s med':>11}{'(min-max)':>17}{'GFLOP/img':>11}"
          f"{'GFLOP/s':>9}{'MB/img peak':>13}")
    for c in models:
        r = runs[c.name]
        mb = f"{mem[c.name] / 2**20:.2f}" if c.name in mem else "-"
        print(f"{c.name:<12}{r.precision:>10}{params[c.name]:>12,}{med[c.name]:>11.2f}"
              f"{f'({min(c.rates):.2f}-{max(c.rates):.2f})':>17}{flops[c.name] / 1e9:>11.3f}"
              f"{flops[c.name] * med[c.name] / 1e9:>9.1f}{mb:>13}")
    for c in convs:
        print(f"{c.name:<16}{'GFLOP/s median':>18}{med[c.name]:>9.1f}{f'({min(c.rates):.1f}-{max(c.rates):.1f})':>17}")

    ours = models[0]
    peer_same = next(c for c in models if c.name == f"peer-{precision}")
    conv_best = next(c for c in convs if c.name == best_bf16)
    r_fp32, r_same = paired(ours, models[1]), paired(ours, peer_same)
    r_conv = sorted(o * flops["ours"] / 1e9 / cv for o, cv in zip(ours.rates, conv_best.rates))  # per-round utilisation
    print(f"ours/peer-fp32 {statistics.median(r_fp32):.2f}x ({r_fp32[0]:.2f}-{r_fp32[-1]:.2f}); ours/peer-same "
          f"({precision}) {statistics.median(r_same):.2f}x ({r_same[0]:.2f}-{r_same[-1]:.2f}); "
          f"ours GFLOP/s / {best_bf16} GFLOP/s {100 * statistics.median(r_conv):.0f}% "
          f"({100 * r_conv[0]:.0f}-{100 * r_conv[-1]:.0f}%); params ours/peer {params['ours'] / params['peer-fp32']:.3f},"
          f" FLOPs/img ours/peer {flops['ours'] / flops['peer-fp32']:.3f}; timed rounds {elapsed:.0f}s")
    result = {
        "bench": "train_throughput", "torch": torch.__version__, "diffusers": diffusers.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "threads": threads,
        "size": size, "channels": args.channels, "batch_size": b, "rounds": args.rounds, "warmup": args.warmup,
        "channels_last": args.channels_last, "compile": args.compile, "conv_shape": list(args.conv_shape),
        "contenders": {c.name: {"precision": runs[c.name].precision, "params": params[c.name],
                                "img_per_s_median": round(med[c.name], 3),
                                "img_per_s_rounds": [round(x, 3) for x in c.rates],
                                "gflop_per_img": round(flops[c.name] / 1e9, 4),
                                "gflop_per_s": round(flops[c.name] * med[c.name] / 1e9, 2),
                                "peak_mb_per_img": round(mem[c.name] / 2**20, 3) if c.name in mem else None}
                       for c in models},
        "conv_gflop_per_s": {c.name: round(med[c.name], 1) for c in convs},
        "ratio_vs_peer_fp32": round(statistics.median(r_fp32), 3),
        "ratio_same_precision": round(statistics.median(r_same), 3),
        "fraction_of_bf16_conv": round(statistics.median(r_conv), 3),
        "fraction_of_fp32_conv": round(flops["ours"] * med["ours"] / 1e9 / med[best_fp32], 3),
    }
    if args.checkpointing:
        r_ck = paired(models[4], models[3])
        mb = f"{mem['large+ckpt'] / mem['large']:.2f}x the peak memory per image, " if mem.get("large") else ""
        print(f"gradient checkpointing on the {params['large'] / 1e6:.1f}M model: {mb}"
              f"{statistics.median(r_ck):.2f}x the images/s ({r_ck[0]:.2f}-{r_ck[-1]:.2f})")
        result["checkpointing_speed_ratio"] = round(statistics.median(r_ck), 3)
    peak = gpu_peak_tflops(device, args.peak_tflops)
    if peak:
        mfu = {c.name: flops[c.name] * med[c.name] / (peak * 1e12) for c in models}
        print(f"model FLOP utilisation (achieved / {peak:.0f} TFLOP/s bf16 dense peak): "
              + ", ".join(f"{n} {100 * u:.1f}%" for n, u in mfu.items()))
        result["peak_tflops"], result["mfu"] = peak, {n: round(u, 4) for n, u in mfu.items()}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, nargs="+", default=[32], help="image sizes, each run in turn (32, 64, ...)")
    ap.add_argument("--channels", type=int, default=1, choices=(1, 3))
    ap.add_argument("--batch-size", type=int, default=32, help="the trainer's default is 64")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls per contender before round 1")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, one per core)")
    ap.add_argument("--conv-shape", type=lambda s: tuple(int(v) for v in s.split(",")), default=(32, 128, 32),
                    help="batch,channels,size of the 3x3-conv microbenchmark (default 32,128,32)")
    ap.add_argument("--checkpointing", action="store_true", help="also the README's 64 px model with and without "
                    "gradient checkpointing (speed and peak memory per image)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    ap.add_argument("--channels-last", action="store_true", help="models and batch in channels_last (GPU)")
    ap.add_argument("--compile", action="store_true", help="torch.compile our model (warm-up includes compilation)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the accelerator's bf16 dense peak for model FLOP utilisation (default: known GPUs)")
    ap.add_argument("--probe-memory", default=None, help=argparse.SUPPRESS)  # internal: one memory probe
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe_memory:
        probe_memory(args.probe_memory, args.size[0], args.channels, args.batch_size)
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA GPU is visible (torch.cuda.is_available() is False)")
    configure_device(device)  # the trainer's TF32 / cuDNN settings on CUDA
    for size in args.size:
        run_size(args, size, device)


if __name__ == "__main__":
    main()
