"""Several EMA policies from ONE training run: the demo's configuration trained through the real library path
(ddpm.launch.train_run), with shadow EMA copies of the raw weights updated at every optimiser step.

    PYTHONPATH=src .venv/bin/python bench/ema_policy.py --out /work/bench-out/ema              # the demo recipe
    PYTHONPATH=src .venv/bin/python bench/ema_policy.py --recipe old --out /work/bench-out/old  # the old defaults
    PYTHONPATH=src .venv/bin/python bench/ema_policy.py --half-life                          # the table only
    PYTHONPATH=src .venv/bin/python bench/ema_policy.py --recipe text --seed 3 --sigmas 0.05 0.1 0.2 --fixed 0 \
        --out /work/bench-out/ema-text-s3      # the text demo; then bench/text_faithfulness.py on each policy folder

Recipes (both: demo_config()'s 1.19M-parameter UNet, 28x28x1, builtin:animal-shapes, 1,000 steps of 64 images):
  demo  demo_config() with train.ema_decay = None, so the run's own EMA is the power EMA at ema_rel_std 0.10
        (cosine schedule, v-prediction, min-SNR-5, lr 2e-3, 50 warm-up steps, cosine LR decay)
  text  text_demo_config(): what `ddpm train --data builtin:shapes-text` resolves to (32x32x3, tokens through
        cross-attention, min-SNR clip(SNR, 0.05, 2), lr 1.4e-3; `--lr 2e-3` for the text runs of before
        config.TEXT_LR_SCALE), power EMA at 0.10 as resolved
  old   the defaults before config format 2 (config.LEGACY_DEFAULTS[1]): linear schedule, eps-prediction, no loss
        weighting, lr 2e-4 constant after 100 warm-up steps, fixed EMA decay 0.999

BENCH-ONLY HOOK: for the duration of the run, `ddpm.training.step.ema_update` (the name the optimiser step calls) is replaced
by a wrapper that first calls the original on the run's EMA, then calls the same original function on one shadow
UNet per policy with that policy's decay for the same step (the loop's n-th call is optimiser step n - 1; the run
must start fresh, so --out must not hold a run). Shadows start from the run's EMA before its first update, i.e. the
initial weights, as the loop's own EMA does. The hook checks that the decay the loop passes equals the decay of the
run's own policy at the counted step, and at the end that the shadow of that policy equals the run's EMA bit for
bit. Nothing in src/ is changed; the original function is restored afterwards.

Policies (decays from ddpm.training.optim, exactly as the loop computes them):
  power-S    d_n = (1 - 1/n)^(gamma + 1), gamma from sigma_rel S       (as ema_decay_for(step, None, S))
  fixed-D    d = min(D, (1 + step) / (10 + step))                        (ema_decay_at(step, D))
At 1,000 steps the warm-up term (1 + step)/(10 + step) <= 1000/1009 = 0.9911 is below 0.995, so every fixed decay
from 0.995 up gives the same EMA; fixed-0.999 is kept as a check of that (its weights must equal fixed-0.995's).

Outputs under --out: run/ (the training run: config, metrics.jsonl, checkpoint), <policy>/checkpoint.safetensors and
<policy>/config.json for each policy (the run's checkpoint with its `ema.*` tensors replaced, written by
training/checkpoint.save_checkpoint; the config's ema_decay / ema_rel_std name the policy), results.json (also
printed): training wall time, final loss, each policy's last decay, half-lives, effective relative width and the
distance of its weights from the raw weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ddpm.config import LEGACY_DEFAULTS, RunConfig
from ddpm.demo import demo_config, text_demo_config
from ddpm.launch import train_run
from ddpm.network.unet import UNet
from ddpm.training import step as step_module
from ddpm.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ddpm.training.optim import ema_decay_at, power_ema_gamma

SIGMAS = (0.05, 0.10, 0.15, 0.20)
FIXED = (0.995, 0.999)


def policies(sigmas: tuple[float, ...] = SIGMAS, fixed: tuple[float, ...] = FIXED) -> dict[str, Callable[[int], float]]:
    """name -> decay of the update after optimiser step `step` (0-based), computed by the library's functions
    (fixed-0 is the raw weights: decay 0 copies them at every step)."""
    table: dict[str, Callable[[int], float]] = {}
    for s in sigmas:  # ema_decay_for(step, None, s) with gamma solved once (the hook checks they agree)
        g = power_ema_gamma(s)
        table[f"power-{s:.2f}"] = lambda step, g=g: (1 - 1 / (step + 1)) ** (g + 1)
    for d in fixed:
        table[f"fixed-{d:g}"] = lambda step, d=d: ema_decay_at(step, d)
    return table


def make_config(recipe: str, steps: int, seed: int) -> RunConfig:
    config = text_demo_config(steps) if recipe == "text" else demo_config(steps)  # text: as `ddpm train` resolves it
    config.train.seed = seed
    if recipe == "demo":
        config.train.ema_decay = None  # the power EMA at config.train.ema_rel_std
        config.train.ema_rel_std = 0.10
    elif recipe == "old":
        for section, values in LEGACY_DEFAULTS[1].items():
            for key, value in values.items():
                setattr(getattr(config, section), key, value)
    elif recipe != "text":
        raise ValueError(recipe)
    config.validate()
    return config


def own_policy(config: RunConfig) -> str:
    t = config.train
    return f"fixed-{t.ema_decay:g}" if t.ema_decay is not None else f"power-{t.ema_rel_std:.2f}"


class ShadowEMAs:
    """The bench-only wrapper of training.step.ema_update (see the module docstring)."""

    def __init__(self, table: dict[str, Callable[[int], float]], own: Callable[[int], float]) -> None:
        self.table, self.own = table, own
        self.shadows: dict[str, torch.nn.Module] = {}
        self.calls = 0
        self.original = step_module.ema_update

    def __enter__(self) -> ShadowEMAs:
        step_module.ema_update = self.update
        return self

    def __exit__(self, *exc: object) -> None:
        step_module.ema_update = self.original

    def update(self, ema: torch.nn.Module, model: torch.nn.Module, decay: float,
               skipped: torch.Tensor | None = None) -> None:
        step = self.calls
        if step == 0:  # before the first update the run's EMA holds the initial weights
            self.shadows = {name: copy.deepcopy(ema) for name in self.table}
        expected = self.own(step)
        if decay != expected:
            raise RuntimeError(f"step {step}: the loop's decay {decay!r} is not its policy's {expected!r}; "
                               "did the run resume? (the hook needs a fresh run)")
        self.original(ema, model, decay, skipped)
        for name, fn in self.table.items():
            self.original(self.shadows[name], model, fn(step), skipped)
        self.calls += 1


# ---- half-lives (item 4 of issue 15) --------------------------------------------------------------------------

def weights(decays: list[float]) -> list[float]:
    """EMA weight of the initial weights (index 0) and of the weights after each update k = 1..n, at the end:
    w_k = (1 - d_k) prod_{j>k} d_j, w_0 = prod_j d_j."""
    n = len(decays)
    w = [0.0] * (n + 1)
    tail = 1.0
    for k in range(n, 0, -1):
        w[k] = (1 - decays[k - 1]) * tail
        tail *= decays[k - 1]
    w[0] = tail
    return w


def profile_stats(decays: list[float]) -> dict[str, float]:
    """Half-lives in steps at the end of the run and the relative width, from the exact weight profile:
    instant: ln 2 / -ln d_n, the half-life of the last decay (how fast the EMA forgets from now on);
    mass:    the h for which the last h updates hold half the EMA's weight (how far back it averages);
    sigma_rel: the standard deviation of the profile over t = k/n (EDM2's measure)."""
    n = len(decays)
    w = weights(decays)
    acc, mass = 0.0, float(n)
    for h in range(1, n + 1):
        acc += w[n - h + 1]
        if acc >= 0.5:  # interpolate inside the h-th step
            mass = h - (acc - 0.5) / w[n - h + 1]
            break
    mean = sum(k / n * wk for k, wk in enumerate(w))
    var = sum((k / n - mean) ** 2 * wk for k, wk in enumerate(w))
    d_last = decays[-1]
    return {"last_decay": d_last, "instant_half_life": math.log(2) / -math.log(d_last) if d_last > 0 else 0.0,
            "mass_half_life": mass, "sigma_rel": math.sqrt(var), "init_weight": w[0]}


def power_closed_form(sigma: float, n: int) -> dict[str, float]:
    """The power EMA's half-lives at update n in closed form: the products telescope, prod_{j>k} d_j = (k/n)^(g+1),
    so the last h updates hold 1 - (1 - h/n)^(g+1) of the weight: mass h = n (1 - 2^(-1/(g+1))); the last decay is
    (1 - 1/n)^(g+1), instant h = ln 2 / ((g+1) (-ln(1 - 1/n))) ~ n ln 2 / (g+1)."""
    g = power_ema_gamma(sigma)
    return {"gamma": g, "mass_half_life": n * (1 - 2 ** (-1 / (g + 1))),
            "instant_half_life": math.log(2) / ((g + 1) * -math.log(1 - 1 / n))}


def half_life_table(lengths: tuple[int, ...] = (1000, 200_000), extra_fixed: tuple[float, ...] = (0.9999,)
                    ) -> list[dict]:
    rows = []
    table = policies()
    for d in extra_fixed:
        table[f"fixed-{d:g}"] = lambda step, d=d: ema_decay_at(step, d)
    for name, fn in table.items():
        for n in lengths:
            row = {"policy": name, "steps": n, **profile_stats([fn(s) for s in range(n)])}
            if name.startswith("power-"):
                closed = power_closed_form(float(name.split("-")[1]), n)
                row["gamma"] = closed["gamma"]
                row["closed_mass_half_life"] = closed["mass_half_life"]
                row["closed_instant_half_life"] = closed["instant_half_life"]
            rows.append(row)
    return rows


def print_half_lives(rows: list[dict]) -> None:
    lengths = sorted({r["steps"] for r in rows})
    head = " | ".join(f"{n:,} steps: last decay, instant / mass half-life, sigma_rel" for n in lengths)
    print(f"| policy | {head} |")
    print("|---|" + "---|" * len(lengths))
    for name in dict.fromkeys(r["policy"] for r in rows):
        cells = []
        for n in lengths:
            r = next(r for r in rows if r["policy"] == name and r["steps"] == n)
            cells.append(f"{r['last_decay']:.6f}, {r['instant_half_life']:,.0f} / {r['mass_half_life']:,.0f} "
                         f"({r['mass_half_life'] / n:.1%}), {r['sigma_rel']:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


# ---- the run -------------------------------------------------------------------------------------------------

def policy_config(config: RunConfig, name: str) -> RunConfig:
    c = RunConfig.from_dict(config.to_dict())
    kind, value = name.split("-")
    c.train.ema_decay = float(value) if kind == "fixed" else None
    if kind == "power":
        c.train.ema_rel_std = float(value)
    return c


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="a new folder (the run must start fresh)")
    p.add_argument("--recipe", choices=("demo", "old", "text"), default="demo")
    p.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS), help="power EMA widths (sigma_rel)")
    p.add_argument("--fixed", type=float, nargs="*", default=list(FIXED), help="fixed decays (0: the raw weights)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, help="the peak learning rate instead of the recipe's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--half-life", action="store_true", help="print the half-life table and stop")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()

    rows = half_life_table()
    if args.half_life:
        print_half_lives(rows)
        print(json.dumps(rows))
        return 0
    if args.out is None:
        p.error("--out is required")
    if args.out.exists() and any(args.out.iterdir()):
        p.error(f"{args.out} is not empty; the shadow EMAs need a fresh run")

    config = make_config(args.recipe, args.steps, args.seed)
    if args.lr is not None:
        config.train.lr = args.lr
    own = own_policy(config)
    table = policies(tuple(args.sigmas), tuple(args.fixed))
    if own not in table:
        p.error(f"the run's own policy {own} must be among the shadows (the hook checks it)")
    run_dir = args.out / "run"
    print(f"recipe {args.recipe}: the run's EMA is {own}; shadows: {', '.join(table)}", file=sys.stderr)
    t0 = time.perf_counter()
    with ShadowEMAs(table, table[own]) as hook:
        train_run(config, run_dir, device="cpu", progress=not args.quiet, resume="never")
    wall = time.perf_counter() - t0
    if hook.calls != args.steps:
        raise RuntimeError(f"the hook saw {hook.calls} EMA updates, expected {args.steps}")

    run_config, raw, ema_sd, step = load_checkpoint(run_dir / CHECKPOINT_NAME)
    own_sd = hook.shadows[own].state_dict()
    if set(own_sd) != set(ema_sd) or not all(torch.equal(own_sd[k], ema_sd[k]) for k in ema_sd):
        raise RuntimeError(f"the shadow {own} differs from the run's EMA: the hook is wrong")
    model = UNet(run_config.model)
    model.load_state_dict(raw)
    raw_vec = torch.cat([v.flatten().double() for v in raw.values()])

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    result = {
        "recipe": args.recipe, "steps": step, "seed": args.seed, "own_policy": own,
        "train_wall_s": round(wall, 1),
        "final_loss": records[-1]["loss"], "final_loss_step": records[-1]["step"],
        "loss_last_100_steps": statistics.fmean(r["loss"] for r in records if r["step"] > step - 100),
        "median_images_per_s": statistics.median(r["images_per_s"] for r in records),
        "config": config.to_dict()["train"] | {"diffusion": config.to_dict()["diffusion"]},
        "policies": {},
    }
    for name, shadow in hook.shadows.items():
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        c = policy_config(run_config, name)
        save_checkpoint(folder / CHECKPOINT_NAME, c, model, shadow, step)
        c.save(folder / "config.json")
        if (run_dir / "captions.json").is_file():  # a text run's captions (the prompt vocabulary), as the run has them
            shutil.copyfile(run_dir / "captions.json", folder / "captions.json")
        sd = shadow.state_dict()
        vec = torch.cat([sd[k].flatten().double() for k in raw])  # in raw's key order
        stats = profile_stats([table[name](s) for s in range(step)])
        result["policies"][name] = {"checkpoint": str(folder / CHECKPOINT_NAME), **stats,
                                    "rel_distance_to_raw": float((vec - raw_vec).norm() / raw_vec.norm())}
    if {"fixed-0.995", "fixed-0.999"} <= set(hook.shadows):
        result["fixed_0.995_equals_0.999"] = all(torch.equal(a, b) for a, b in zip(
            hook.shadows["fixed-0.995"].parameters(), hook.shadows["fixed-0.999"].parameters()))
    result["half_lives"] = rows
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("half_lives", "config")}, indent=1))
    print_half_lives(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
