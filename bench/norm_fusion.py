"""GroupNorm + SiLU fused by torch.compile (inductor's generated C++ kernel) against eager, forward + backward under
bf16 autocast, at the shapes where our 32 px bench model normalises (batch 32: widths 32 and 64 at 32, 16 and 8 px,
and the decoder's concatenated 96 and 128 channels).

Why: outside the convolutions, GroupNorm and SiLU are the largest part of our CPU training step (~10%, see
bench/conv_ceiling.py and docs/benchmarks.md); one fused kernel would read and write each activation once instead
of twice. This measures whether that pays before wiring it into the network.

    .venv/bin/python bench/norm_fusion.py          # ~1 min on 2 cores, compilation included

Prints per shape: compile time (first two calls), eager and compiled median ms over alternating rounds, their ratio
(above 1: the fused kernel is faster) and the largest output difference (bf16 rounding).
"""

from __future__ import annotations

from rounds import images_per_s_in_rounds  # bench/ is on sys.path when a script runs
import argparse
import math
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

SHAPES = [(32, 32, 32, 32), (32, 64, 16, 16), (32, 64, 8, 8), (32, 96, 32, 32), (32, 128, 16, 16)]  # (B, C, H, W)


def norm_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """SiLU(GroupNorm(x)) with network/layers.py's group_norm and its gcd(32, C) groups: what each ResBlock applies
    before its first convolution and the output head before the last (before the second convolution a scale-shift
    sits between)."""
    return F.silu(F.group_norm(x, math.gcd(32, x.shape[1]), weight, bias))


def step(fn: Callable[..., torch.Tensor], shape: tuple[int, int, int, int]) -> Callable[[], torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(torch.bfloat16).requires_grad_()
    weight, bias = torch.ones(shape[1], requires_grad=True), torch.zeros(shape[1], requires_grad=True)
    grad = torch.randn(shape, generator=gen).to(torch.bfloat16)

    def run() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(x, weight, bias)
        out.backward(grad)
        x.grad = weight.grad = bias.grad = None
        return out.detach()

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    compiled = torch.compile(norm_silu, dynamic=False)
    print(f"GroupNorm(32 groups) + SiLU fwd+bwd, bf16 autocast, {torch.get_num_threads()} threads; "
          f"torch {torch.__version__}")
    for shape in SHAPES:
        eager_run, fused_run = step(norm_silu, shape), step(compiled, shape)
        t0 = time.perf_counter()
        fused_out = fused_run()
        fused_run()
        compile_s = time.perf_counter() - t0
        eager_out = eager_run()
        calls_per_s = images_per_s_in_rounds({"eager": eager_run, "compiled": fused_run}, 1, args.rounds, warmup=1)
        e, c = (statistics.median(1e3 / rate for rate in calls_per_s[name]) for name in ("eager", "compiled"))
        diff = (eager_out.float() - fused_out.float()).abs().max().item()
        print(f"{str(shape):<18} compile {compile_s:5.1f} s   eager {e:6.2f} ms   compiled {c:6.2f} ms   "
              f"eager/compiled {e / c:.2f}x   max |diff| {diff:.3g}", flush=True)


if __name__ == "__main__":
    main()
