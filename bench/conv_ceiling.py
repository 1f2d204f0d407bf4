"""The ceiling of any implementation of our UNet on this machine: how much of the training step is convolution,
how fast those convolutions run inside the step, and what ours/peer ratio would follow if everything else were free.

Why
    train_throughput.py finds ours and diffusers' UNet2DModel at the same parameter count and the same FLOPs per
    image (ratio 1.000), nearly all of them (>98%) in convolutions. Any speed-up over the peer at equal FLOPs must then
    come from spending less time outside the convolutions or from faster convolutions. This script measures both
    limits, so that a target such as "3x the peer's images/s" can be checked against what is physically on offer.

What is measured (same models, batch and step as train_throughput.py; contenders take turns in rounds)
    step ms      wall time of one training step, no profiler (median over rounds).
    conv ms      self time of oneDNN's convolution kernels (aten::mkldnn_convolution, aten::convolution_backward)
                 per step, from torch.profiler in separate profiled steps; conv share = conv ms / the profiled
                 step's total self time (the profiler adds a little to every op, so the share errs low). CPU only.
    conv GFLOP/s the convolution FLOPs of a step (FlopCounterMode) over conv ms: the conv kernels' own rate at the
                 model's shapes (widths 32/64 at 32/16/8 px here), against the 3x3-conv microbenchmark of
                 train_throughput.py (128 -> 128 channels, default and channels_last, best taken).

    ceiling A = peer-fp32 step ms / our conv ms
        ours/peer-fp32 if every non-convolution op of our step (norms, activations, attention, optimiser, casts)
        took no time at all.
    ceiling B = peer-fp32 step ms / (our conv FLOPs per step / microbenchmark bf16 GFLOP/s)
        ... and if, in addition, every convolution ran as fast as the microbenchmark (a 128-channel 3x3 conv).

Run
    .venv/bin/python bench/conv_ceiling.py                              # 32x32x1, batch 32, 5 rounds (~1 min)
    .venv/bin/python bench/conv_ceiling.py --size 64 --channels 3 --batch-size 16
    .venv/bin/python bench/conv_ceiling.py --shapes 12                  # also our slowest conv shapes
The last line is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from ddpm.diffusion.forward import diffusion_loss
from ddpm.diffusion.schedule import NoiseSchedule
from train_throughput import conv_contender, make_batch, make_model_run  # bench/ is on sys.path

CONV_KERNELS = ("aten::mkldnn_convolution", "aten::convolution_backward")  # self time: oneDNN's kernels, not the
# dispatcher ops above them (aten::convolution, aten::_convolution: a few microseconds of self time each)
aten = torch.ops.aten


def conv_flops_per_step(model: torch.nn.Module, schedule: NoiseSchedule, batch: tuple, n: int = 4) -> float:
    """Forward + backward convolution FLOPs of one step at the full batch (counted on n images, scaled)."""
    b = batch[0].shape[0]
    x0, cond, t, noise = (v[:n] for v in batch)
    with FlopCounterMode(display=False) as counter:
        loss, _ = diffusion_loss(model, schedule, x0, cond, t, noise)
        loss.backward()
    model.zero_grad(set_to_none=True)
    counts = counter.get_flop_counts()["Global"]
    conv = sum(v for op, v in counts.items() if op in (aten.convolution, aten.convolution_backward))
    return conv / n * b


def profiled_conv_ms(step, steps: int, top: int = 0) -> tuple[float, float, list[tuple[float, str]]]:
    """(conv self ms per step, profiled total self ms per step, the `top` slowest conv shapes [(ms/step, shape)])."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=top > 0) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages(group_by_input_shape=top > 0)
    total = sum(e.self_cpu_time_total for e in events) / 1e3 / steps
    convs = [e for e in events if e.key in CONV_KERNELS]
    conv = sum(e.self_cpu_time_total for e in convs) / 1e3 / steps
    shapes = sorted(((e.self_cpu_time_total / 1e3 / steps, f"{e.key.split('::')[1]} {e.input_shapes[:2]}")
                     for e in convs), reverse=True)[:top]
    return conv, total, shapes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=1, choices=(1, 3))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="steps per contender per round (timed, then profiled)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, one per core)")
    ap.add_argument("--shapes", type=int, default=0, help="also print our N slowest convolution shapes")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")  # CPU only: on CUDA the conv time sits in kernel events, not in these aten ops
    schedule = NoiseSchedule.create("linear", 1000)
    batch = make_batch(args.batch_size, args.channels, args.size, device, False)
    names = ["ours", "peer-fp32", "peer-bf16"]
    runs = {n: make_model_run(n, args.size, args.channels, device, batch, schedule) for n in names}
    conv_flops = {n: conv_flops_per_step(r.model, schedule, batch) for n, r in runs.items()}
    micro = [conv_contender(torch.bfloat16, cl, (32, 128, 32), device) for cl in (False, True)]
    for r in runs.values():
        r.step(), r.step()  # warm-up: kernel selection, optimiser state
    for c in micro:
        c.run()

    step_ms: dict[str, list[float]] = {n: [] for n in names}
    conv_ms: dict[str, list[float]] = {n: [] for n in names}
    share: dict[str, list[float]] = {n: [] for n in names}
    micro_rate: list[float] = []
    shapes: list[tuple[float, str]] = []
    for rnd in range(args.rounds):
        for n in names if rnd % 2 == 0 else names[::-1]:
            step = runs[n].step
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            step_ms[n].append((time.perf_counter() - t0) * 1e3 / args.steps)
            top = args.shapes if (n == "ours" and rnd == args.rounds - 1) else 0
            c_ms, total_ms, found = profiled_conv_ms(step, args.steps, top)
            conv_ms[n].append(c_ms)
            share[n].append(c_ms / total_ms)
            shapes = found or shapes
        best = 0.0
        for c in micro:  # best of default / channels_last this round
            t0 = time.perf_counter()
            c.run()
            best = max(best, c.work / (time.perf_counter() - t0) / 1e9)
        micro_rate.append(best)

    med = statistics.median
    print(f"== {args.channels}x{args.size}x{args.size}, batch {args.batch_size}, {device} "
          f"({torch.get_num_threads()} threads), {args.rounds} rounds x {args.steps} steps")
    print(f"{'contender':<11}{'step ms':>9}{'conv ms':>9}{'conv share':>12}{'conv GFLOP/step':>17}{'conv GFLOP/s':>14}")
    for n in names:
        rate = conv_flops[n] / 1e9 / (med(conv_ms[n]) / 1e3)
        print(f"{n:<11}{med(step_ms[n]):>9.1f}{med(conv_ms[n]):>9.1f}{100 * med(share[n]):>11.0f}%"
              f"{conv_flops[n] / 1e9:>17.2f}{rate:>14.0f}")
    print(f"3x3 conv 128->128 microbenchmark, bf16 (best of default/channels_last): {med(micro_rate):.0f} GFLOP/s")
    # per round: each ratio pairs measurements taken seconds apart
    actual = sorted(p / o for p, o in zip(step_ms["peer-fp32"], step_ms["ours"]))
    ceil_a = sorted(p / c for p, c in zip(step_ms["peer-fp32"], conv_ms["ours"]))
    ceil_b = sorted(p / (conv_flops["ours"] / 1e9 / m * 1e3) for p, m in zip(step_ms["peer-fp32"], micro_rate))
    in_step = conv_flops["ours"] / 1e9 / (med(conv_ms["ours"]) / 1e3)
    print(f"ours/peer-fp32 now {med(actual):.2f}x ({actual[0]:.2f}-{actual[-1]:.2f}); ceiling A (nothing but our "
          f"convolutions costs time) {med(ceil_a):.2f}x ({ceil_a[0]:.2f}-{ceil_a[-1]:.2f}); ceiling B (... and they "
          f"run at the microbenchmark's rate) {med(ceil_b):.2f}x ({ceil_b[0]:.2f}-{ceil_b[-1]:.2f}); our convs run at "
          f"{100 * in_step / med(micro_rate):.0f}% of the microbenchmark")
    for ms, shape in shapes:
        print(f"  {ms:7.2f} ms/step  {shape}")
    print(json.dumps({
        "bench": "conv_ceiling", "torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
        "size": args.size, "channels": args.channels, "batch_size": args.batch_size, "rounds": args.rounds,
        "step_ms": {n: round(med(v), 2) for n, v in step_ms.items()},
        "conv_ms": {n: round(med(v), 2) for n, v in conv_ms.items()},
        "conv_share": {n: round(med(v), 3) for n, v in share.items()},
        "conv_gflop_per_step": {n: round(v / 1e9, 3) for n, v in conv_flops.items()},
        "micro_bf16_gflop_per_s": round(med(micro_rate), 1),
        "ratio_now": round(med(actual), 3), "ceiling_a": round(med(ceil_a), 3), "ceiling_b": round(med(ceil_b), 3),
    }))


if __name__ == "__main__":
    main()
