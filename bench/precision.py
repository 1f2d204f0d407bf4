"""Training-step images/s of one model under fp32, bf16 autocast and bf16 + channels_last, measured in turns.

    .venv/bin/python bench/precision.py                 # the demo model (28x28x1, 1.19M parameters), batch 64
    .venv/bin/python bench/precision.py --rounds 9

Each round runs every contender for a few steps (order reversed every other round, so they share the machine's
noise); the table gives median images/s over rounds and each contender's ratio to fp32 (median of per-round
ratios). This is what decided the demo's precision and memory format (docs/demo.md).
"""

from __future__ import annotations

from rounds import images_per_s_in_rounds  # bench/ is on sys.path when a script runs
import argparse
import statistics

import torch

from ddpm.demo import demo_config
from ddpm.diffusion.forward import diffusion_loss
from ddpm.network.unet import UNet, count_parameters
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.training.optim import make_optimizer

CONTENDERS = {"fp32": (False, False), "bf16": (True, False), "bf16+channels_last": (True, True)}


def make_step(bf16: bool, channels_last: bool, batch: int, seed: int = 0):
    """A closure running one full training step (forward, loss, backward, clip, AdamW) of a fresh demo model."""
    config = demo_config()
    torch.manual_seed(seed)
    model = UNet(config.model)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = make_optimizer(model, config)
    schedule = NoiseSchedule.create(config.diffusion.schedule, config.diffusion.num_steps)
    m = config.model
    x0 = (torch.rand(batch, m.channels, m.image_size, m.image_size) * 2 - 1).contiguous(memory_format=fmt)
    noise = torch.randn_like(x0)
    cond = torch.randint(0, m.num_classes + 1, (batch,))
    t = torch.randint(0, schedule.num_steps, (batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = diffusion_loss(model, schedule, x0, cond, t, noise, config.diffusion.loss_weighting)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
        opt.step()

    return step, count_parameters(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps-per-round", type=int, default=3)
    args = ap.parse_args()

    steps, params = {}, 0
    for name, (bf16, cl) in CONTENDERS.items():
        steps[name], params = make_step(bf16, cl, args.batch_size)
    rates = images_per_s_in_rounds(steps, args.batch_size, args.rounds, args.steps_per_round)
    names = list(steps)
    print(f"model: {params / 1e6:.2f}M parameters, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds x {args.steps_per_round} steps")
    print(f"{'contender':<20} {'img/s median':>12} {'min-max':>14} {'ratio to fp32':>14}")
    for name in names:
        ratio = statistics.median(a / b for a, b in zip(rates[name], rates["fp32"]))
        lo, hi = min(rates[name]), max(rates[name])
        print(f"{name:<20} {statistics.median(rates[name]):12.1f} {lo:6.1f}-{hi:<7.1f} {ratio:14.2f}")


if __name__ == "__main__":
    main()
