"""The demo's training step (src/ddpm/demo.py: 28x28x1, 1.19M parameters, batch 64, bf16 where the trainer picks
it) in this source tree against the same step in another checkout's, in turns: how much a change speeds it up.

    .venv/bin/python bench/step_vs_ref.py --ref ../main/src            # 9 rounds x 3 steps each
    .venv/bin/python bench/step_vs_ref.py --ref ../main/src --size 32  # the same model at 32x32
    .venv/bin/python bench/step_vs_ref.py --ref ../main/src --model animals64 --batch-size 32 --rounds 5
        # the README's Animals-10 model instead: 64x64x3, widths 64-128-128-128, attention at 16 and 8 px (9.9M)

The step is the body of the trainer's loop (src/ddpm/training/loop.py; training.py in the flat layout) without
data loading and logging: diffusion_loss under the trainer's autocast, zero_grad, backward, clip_grad_norm_,
make_optimizer's AdamW step, and the EMA update. Both trees build the same weights (seed 0) and see the same
batch. Each round runs both (order alternating), the ratio is the median of per-round ratios with its min-max.
--ref may hold either layout: the package-by-layer tree (diffusion/, network/, training/, ...) or the flat one
(schedule.py, network.py, training.py, ...) from before the reorganisation.
"""

from __future__ import annotations

from rounds import images_per_s_in_rounds  # bench/ is on sys.path when a script runs
import argparse
import copy
import importlib
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch


# Where each name the step uses lives: the package-by-layer tree's module first, then the flat layout's (before
# the reorganisation into common/, diffusion/, network/, training/, ...), so --ref may be either.
LOCATIONS = {
    "demo_config": ("demo",),
    "ModelConfig": ("config",),
    "resolve_precision": ("runtime.device", "training"),
    "make_optimizer": ("training.optim", "training"),
    "ema_update": ("training.optim", "training"),
    "ema_decay_at": ("training.optim", "training"),
    "train": ("training.loop", "training"),  # the module holding the trainer's loop (for its clip call)
    "UNet": ("network.unet", "network"),
    "NoiseSchedule": ("diffusion.schedule", "schedule"),
    "diffusion_loss": ("diffusion.forward", "diffusion"),
}


def load_tree(src: Path, name: str) -> ModuleType:
    """Import the `ddpm` package found under `src` as a package called `name` (a copy, so both trees coexist).

    The copy's absolute imports (`from ddpm.x import y`, as the package-by-layer tree writes them) are renamed to
    `name`, so that each tree runs its own modules and never the installed `ddpm`'s."""
    root = Path(tempfile.mkdtemp(prefix="ddpm-ref-"))
    shutil.copytree(src / "ddpm", root / name)
    own = re.compile(r"^(\s*)(from|import)\s+ddpm(?=[\s.])", re.MULTILINE)
    for path in (root / name).rglob("*.py"):
        text = path.read_text()
        path.write_text(own.sub(rf"\1\2 {name}", text))
    sys.path.insert(0, str(root))
    pkg = importlib.import_module(name)
    for attr in LOCATIONS:
        lookup(pkg, attr)  # import every module the step uses now, not inside the timed rounds
    return pkg


def lookup(pkg: ModuleType, attr: str) -> tuple[object, ModuleType]:
    """`attr` from the first of its LOCATIONS that `pkg` has, with the module that holds it."""
    for where in LOCATIONS[attr]:
        try:
            module = importlib.import_module(f"{pkg.__name__}.{where}")
        except ModuleNotFoundError as e:
            if e.name is None or not e.name.startswith(pkg.__name__ + "."):
                raise  # a dependency missing, not a module of the other layout
            continue
        if hasattr(module, attr):
            return getattr(module, attr), module
    raise AttributeError(f"{attr} not found in {pkg.__name__} (looked in {', '.join(LOCATIONS[attr])})")


def find(pkg: ModuleType, attr: str):
    return lookup(pkg, attr)[0]


def make_step(pkg: ModuleType, size: int, batch: int, model_name: str = "demo"):
    config = find(pkg, "demo_config")()
    config.model.image_size = size
    if model_name == "animals64":  # the README's `ddpm train --channels 3 --image-size 64 --base-channels 64
        # --channel-mults 1,2,2,2 --attention-resolutions 16,8`: every other model setting at ModelConfig's default
        model_config = find(pkg, "ModelConfig")
        config.model = model_config(channels=3, image_size=64, base_channels=64, channel_mults=(1, 2, 2, 2),
                                    attention_resolutions=(16, 8), num_classes=config.model.num_classes)
    device = torch.device("cpu")
    precision = find(pkg, "resolve_precision")(config.train.precision, device)
    torch.manual_seed(0)
    model = find(pkg, "UNet")(config.model)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = find(pkg, "make_optimizer")(model, config)
    schedule = find(pkg, "NoiseSchedule").create(config.diffusion.schedule, config.diffusion.num_steps)
    m, d = config.model, config.diffusion
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(batch, m.channels, m.image_size, m.image_size, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    cond, t = torch.randint(0, m.num_classes + 1, (batch,), generator=g), torch.randint(0, d.num_steps, (batch,), generator=g)
    state = {"step": 0}
    diffusion_loss, ema_update, ema_decay_at = (find(pkg, n) for n in ("diffusion_loss", "ema_update", "ema_decay_at"))
    foreach = "foreach=True" in Path(lookup(pkg, "train")[1].__file__).read_text()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, _ = diffusion_loss(model, schedule, x0, cond, t, noise, d.loss_weighting, d.min_snr_gamma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # the clip call as each tree's trainer makes it (foreach=True since the issue-7 changes)
        clip_kw = {"foreach": True} if foreach else {}
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip, **clip_kw)
        opt.step()
        ema_update(ema, model, ema_decay_at(state["step"], config.train.ema_decay))
        state["step"] += 1

    return step, precision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", type=Path, required=True, help="the other checkout's src folder (holding ddpm/)")
    ap.add_argument("--size", type=int, default=28, help="image size of the demo model (animals64: always 64)")
    ap.add_argument("--model", choices=("demo", "animals64"), default="demo")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--steps-per-round", type=int, default=3)
    args = ap.parse_args()
    here = Path(__file__).resolve().parent.parent / "src"
    trees = {"this": load_tree(here, "ddpm_this"), "ref": load_tree(args.ref.resolve(), "ddpm_ref")}
    steps = {}
    for name, pkg in trees.items():
        steps[name], precision = make_step(pkg, args.size, args.batch_size, args.model)
    rates = images_per_s_in_rounds(steps, args.batch_size, args.rounds, args.steps_per_round)
    names = list(steps)
    ratios = sorted(a / b for a, b in zip(rates["this"], rates["ref"]))
    size = 64 if args.model == "animals64" else args.size
    print(f"{args.model} step at {size}x{size}, batch {args.batch_size}, {precision}, {torch.get_num_threads()} "
          f"threads, {args.rounds} rounds x {args.steps_per_round} steps; ref = {args.ref}")
    for name in names:
        print(f"{name:<5} {statistics.median(rates[name]):8.1f} img/s ({min(rates[name]):.1f}-{max(rates[name]):.1f})")
    print(f"this/ref {statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})")


if __name__ == "__main__":
    main()
