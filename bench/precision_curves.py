"""Does bf16 autocast train as well as fp32? The demo configuration trained twice, same seed and data order, once
per precision; their training-loss curves side by side and the held-out loss of each EMA model, evaluated in fp32.

    .venv/bin/python bench/precision_curves.py                  # 400 steps each (8 min on 2 idle cores)
    .venv/bin/python bench/precision_curves.py --steps 1200 --png curves.png

Training loss: the trainer's logged mean over each 25-step window (min-SNR weighted; random t, so noisy).
Held-out loss: the unweighted and min-SNR-weighted MSE of each EMA model on the first `--eval-images` images of the
test split, at `--eval-t` timesteps evenly spread over [0, T), with one fixed noise draw shared by both models, in
fp32: the paired comparison that decides "no worse than fp32". Also prints each run's wall time and images/s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ddpm.api import load_run
from ddpm.launch import train_run
from ddpm.data.dataset import load_dataset
from ddpm.data.builtin import BUILTIN
from ddpm.common.pixels import to_model_range
from ddpm.demo import demo_config
from ddpm.diffusion.forward import diffusion_loss


@torch.no_grad()
def held_out_loss(run_dir: Path, images: int, timesteps: int, seed: int = 0) -> tuple[float, float]:
    """(unweighted, min-SNR weighted) mean loss of the run's EMA model over images x timesteps, fp32."""
    run = load_run(run_dir)
    dc, m = run.config.diffusion, run.config.model
    data = load_dataset(BUILTIN, m.image_size, m.channels, "test")
    x0 = to_model_range(data.images[:images])
    cond = data.labels[:images]
    gen = torch.Generator().manual_seed(seed)
    plain, weighted = [], []
    for t_value in torch.linspace(0, dc.num_steps - 1, timesteps).round().long().tolist():
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.full((len(x0),), t_value)
        loss, per_sample = diffusion_loss(run.model, run.schedule, x0, cond, t, noise, dc.loss_weighting,
                                          dc.min_snr_gamma, dc.prediction)
        plain.append(per_sample.mean().item())
        weighted.append(loss.item())
    return sum(plain) / len(plain), sum(weighted) / len(weighted)


def train(precision: str, steps: int, out: Path) -> dict:
    config = demo_config(steps)
    config.train.precision = precision
    start = time.perf_counter()
    train_run(config, out, progress=False)
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"seconds": seconds, "images_per_s": steps * config.train.batch_size / seconds,
            "curve": [(r["step"], r["loss"]) for r in records]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--eval-images", type=int, default=500)
    ap.add_argument("--eval-t", type=int, default=20)
    ap.add_argument("--png", type=Path, help="also plot both training curves here")
    ap.add_argument("--json", type=Path, help="write the curves and numbers here")
    args = ap.parse_args()

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            out = Path(tmp) / precision
            results[precision] = train(precision, args.steps, out)
            results[precision]["held_out"] = held_out_loss(out, args.eval_images, args.eval_t)

    print(f"demo model, {args.steps} steps per precision, {torch.get_num_threads()} threads")
    print(f"{'step':>6} {'fp32 loss':>10} {'bf16 loss':>10}")
    for (step, a), (_, b) in zip(results["fp32"]["curve"], results["bf16"]["curve"]):
        if step % 100 == 0 or step == args.steps:
            print(f"{step:6d} {a:10.4f} {b:10.4f}")
    for p in ("fp32", "bf16"):
        r = results[p]
        tail = [loss for step, loss in r["curve"] if step > args.steps * 3 // 4]
        print(f"{p}: last-quarter training loss {sum(tail) / len(tail):.4f}; held-out loss (EMA, fp32) "
              f"{r['held_out'][0]:.4f} unweighted, {r['held_out'][1]:.4f} weighted; {r['seconds']:.0f} s, "
              f"{r['images_per_s']:.0f} images/s")
    f, b = results["fp32"]["held_out"], results["bf16"]["held_out"]
    print(f"bf16 / fp32: held-out loss {b[0] / f[0]:.3f} (unweighted), {b[1] / f[1]:.3f} (weighted); "
          f"speed {results['bf16']['images_per_s'] / results['fp32']['images_per_s']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"steps": args.steps, **results}, indent=1))
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
        for p in ("fp32", "bf16"):
            steps, losses = zip(*results[p]["curve"])
            ax.plot(steps, losses, label=f"{p} (held-out {results[p]['held_out'][1]:.4f})")
        ax.set(xlabel="step", ylabel="training loss (min-SNR weighted)", yscale="log", title="demo model: bf16 vs fp32")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png)
        print(f"plot: {args.png}")


if __name__ == "__main__":
    main()
