"""Which levers pay for the demo model's training step on this CPU: each variant against the trainer's step, in turns.

    .venv/bin/python bench/levers.py                    # demo model (28x28x1), batch 64, 7 rounds
    .venv/bin/python bench/levers.py --size 32 --threads 1

Variants (each changes one thing from "trainer", the step as training/loop.py runs it, EMA included):
    fused-attn      torch's fused scaled_dot_product_attention also when training bf16 (before: explicit matmuls)
    foreach-adamw   AdamW(foreach=True) instead of fused=True; clip_grad_norm_ without foreach
    channels_last   model and batch in channels_last
    fp32            no bf16 autocast
    threads+1       one more torch thread than --threads
Prints median images/s over rounds and each variant's median per-round ratio to "trainer" (min-max).
"""

from __future__ import annotations

from rounds import images_per_s_in_rounds  # bench/ is on sys.path when a script runs
import argparse
import copy
import statistics
from unittest import mock

import torch
import torch.nn.functional as F

import ddpm.network.attention as network
from ddpm.demo import demo_config
from ddpm.diffusion.forward import diffusion_loss
from ddpm.network.unet import UNet
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.training.optim import ema_decay_at, ema_update, make_optimizer

VARIANTS = ("trainer", "fused-attn", "foreach-adamw", "channels_last", "fp32", "threads+1")


def fused_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())


def make_step(variant: str, size: int, batch: int, threads: int):
    config = demo_config()
    config.model.image_size = size
    m, d = config.model, config.diffusion
    torch.manual_seed(0)
    model = UNet(m)
    fmt = torch.channels_last if variant == "channels_last" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    ema = copy.deepcopy(model).requires_grad_(False)
    foreach = variant == "foreach-adamw"
    opt = (torch.optim.AdamW(model.parameters(), lr=config.train.lr, foreach=True) if foreach
           else make_optimizer(model, config))
    schedule = NoiseSchedule.create(d.schedule, d.num_steps)
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(batch, m.channels, size, size, generator=g) * 2 - 1).contiguous(memory_format=fmt)
    noise = torch.randn(x0.shape, generator=g).contiguous(memory_format=fmt)
    cond, t = torch.randint(0, m.num_classes + 1, (batch,), generator=g), torch.randint(0, d.num_steps, (batch,), generator=g)
    n_threads = threads + 1 if variant == "threads+1" else threads
    attend = fused_attend if variant == "fused-attn" else network.attend

    def step() -> None:
        torch.set_num_threads(n_threads)
        with mock.patch.object(network, "attend", attend):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant != "fp32"):
                loss, _ = diffusion_loss(model, schedule, x0, cond, t, noise, d.loss_weighting, d.min_snr_gamma)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip, foreach=None if foreach else True)
            opt.step()
            ema_update(ema, model, ema_decay_at(100, config.train.ema_decay))

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    names = args.variants.split(",")
    steps = {n: make_step(n, args.size, args.batch_size, args.threads) for n in names}
    rates = images_per_s_in_rounds(steps, args.batch_size, args.rounds)
    print(f"demo model at {args.size}x{args.size}, batch {args.batch_size}, {args.threads} thread(s), {args.rounds} rounds")
    print(f"{'variant':<15}{'img/s med':>10}{'(min-max)':>16}{'vs trainer':>12}{'(min-max)':>14}")
    for n in names:
        ratios = sorted(a / b for a, b in zip(rates[n], rates[names[0]]))
        print(f"{n:<15}{statistics.median(rates[n]):>10.1f}{f'({min(rates[n]):.1f}-{max(rates[n]):.1f})':>16}"
              f"{statistics.median(ratios):>11.2f}x{f'({ratios[0]:.2f}-{ratios[-1]:.2f})':>14}")


if __name__ == "__main__":
    main()
