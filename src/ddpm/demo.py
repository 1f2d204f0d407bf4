"""`ddpm demo`: the main job on the built-in dataset, sized for a 2-core CPU in about 10 minutes where it has native
bf16 (AVX512-BF16 or AMX); in fp32 on an AVX2-only CPU its training takes about 15 (docs/demo.md).

The demo trains exactly what `ddpm train --out RUN` resolves to on the built-in data (resolve.py): the `tiny`
preset at the silhouettes' native 28 px, grey, with the recipe that is every run's default; only its logging differs
(DEMO_LOGGING). Why each choice (measured on a 2-core AMD EPYC with AVX512-BF16; docs/demo.md):
  * 28x28, 1 channel: the silhouettes' native size, so no pixel is invented and a step costs 23% less than at 32.
  * the tiny UNet (channels 32-64-64, one block per level, attention at 7 px) in bf16 autocast where native.
  * v-prediction: x0 = sqrt(ab) x_t - sqrt(1-ab) v stays well conditioned at high noise, where eps-prediction's
    x0 = (x_t - sqrt(1-ab) eps) / sqrt(ab) amplifies the network's error; the global shape is decided there.
    Per-class accuracy 99.3% vs 86.3% for eps at 1,000 steps (docs/demo.md).
  * min-SNR weighting, a high peak LR with cosine decay, and the power EMA: fast convergence for a short run.
  * sampling: the default of every sampling run, DPM-Solver++(2M) at 20 steps, guidance 3 for a class model and 7
    for a text one (docs/evaluation.md, docs/text.md).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ddpm.common.pixels import to_uint8
from ddpm.config import RunConfig
from ddpm.data.builtin import BUILTIN
from ddpm.diffusion.sampling import SamplingConfig

DEMO_LOGGING = {"log_every": 25, "sample_every": 0, "save_every": 0}  # the only settings beside the defaults
PER_CLASS = 8
DEMO_SAMPLING = SamplingConfig()  # the defaults: dpm++2m, 20 steps, the model's default guidance, seed 0


def demo_config(steps: int | None = None) -> RunConfig:
    """What `ddpm train --data builtin:animal-shapes` resolves to (the tiny preset, 28 px grey, the recipe), with the
    demo's logging; `steps` overrides the preset's 1,000."""
    from ddpm.resolve import resolve_config

    train = {**DEMO_LOGGING, **({"steps": steps} if steps else {})}
    return resolve_config({"data": {"source": BUILTIN}, "train": train}).config


def free_run_dir(out: Path) -> Path:
    """`out`, or `out-2`, `out-3`, ... when it already holds a run: a second demo never overwrites the first."""
    candidate, n = out, 1
    while (candidate / "checkpoint.safetensors").exists():
        n += 1
        candidate = out.with_name(f"{out.name}-{n}")
    return candidate


def run_demo(out: Path, device: torch.device, steps: int | None = None, progress: bool = True) -> dict[str, Path]:
    """Train, draw a grid with one row per class and its denoising trajectory, animate the noising, write an index
    page linking them all; return the paths of what was written."""
    from ddpm.data.builtin import example_image
    from ddpm.launch import train_run
    from ddpm.pictures.grid import make_grid
    from ddpm.pictures.noising import named_schedules, save_noising
    from ddpm.pictures.trajectory import Trajectory, save_trajectory
    from ddpm.runtime.progress import SamplingBar, chain
    from ddpm.training.watch import refresh_page

    out = free_run_dir(out)
    run = train_run(demo_config(steps), out, device=device, progress=progress)
    steps = DEMO_SAMPLING.num_steps(run.schedule.num_steps)
    traj = Trajectory(steps, max_frames=25)
    with SamplingBar(len(run.class_names) * PER_CLASS, DEMO_SAMPLING.batch_size, steps, enabled=progress) as bar:
        x = run.sample(None, PER_CLASS, DEMO_SAMPLING, callback=chain(bar, traj))
    grid = out / "samples.png"
    make_grid(to_uint8(x), nrow=PER_CLASS, labels=run.class_names, scale=3).save(grid)
    paths = {"samples grid": grid}
    paths.update(save_trajectory(traj, out / "trajectory.gif", PER_CLASS, run.class_names, scale=1))
    paths.update(save_noising(example_image(64), named_schedules(["linear", "cosine"], 1000), out / "noising.gif",
                              num_frames=40, seed=0))
    paths.update(refresh_page(out))  # the training curve and the index page, now with the pictures above
    paths["run directory"] = out
    return paths


# ---- `ddpm demo --text`: a text-conditioned model on the generated shapes ------------------------------------------

TEXT_STEPS = 1000  # the text demo's training steps (the tiny preset's batch of 64): what fits ten minutes end to end
# on the reference 2-core Zen 4 CPU in native bf16 (about 8 min of training at 2.1 steps/s, since cross-attention
# trains through the explicit path; docs/text.md has the measured end-to-end time and the faithfulness table).
# 26-28 minutes of training on a 2-core AVX2 CPU in fp32.
TEXT_PER_PROMPT = 6
TEXT_PROMPTS = (  # typed prompts for the grid; the last four name colour-shape pairs never drawn in training
    "a red circle on the left", "a large blue square", "a yellow triangle at the top", "a small white cross",
    "a green circle above a purple cross", "a blue triangle to the left of a yellow square",
    "a red square", "a green triangle", "a blue cross on the right", "a yellow circle above a white square",
)


def text_demo_config(steps: int | None = None) -> RunConfig:
    """What `ddpm train --data builtin:shapes-text` resolves to (the tiny preset, 32 px RGB, text conditioning with
    the caption's tokens through cross-attention, the recipe), with the demo's logging and TEXT_STEPS steps."""
    from ddpm.data.shapes_text import SHAPES_TEXT
    from ddpm.resolve import resolve_config

    train = {**DEMO_LOGGING, "steps": steps or TEXT_STEPS}
    return resolve_config({"data": {"source": SHAPES_TEXT}, "train": train}).config


def run_text_demo(out: Path, device: torch.device, steps: int | None = None, progress: bool = True) -> dict[str, Path]:
    """Train the text demo, draw a grid of TEXT_PROMPTS (one row each) and measure prompt faithfulness on seen and
    held-out scenes (faithfulness.json and its table); return the paths of what was written."""
    import json

    from ddpm.common.files import write_text_atomic
    from ddpm.evaluation import faithfulness
    from ddpm.evaluation.evaluate import prompt_faithfulness
    from ddpm.launch import train_run
    from ddpm.pictures.grid import make_grid
    from ddpm.runtime.progress import SamplingBar
    from ddpm.training.watch import refresh_page

    out = free_run_dir(out)
    run = train_run(text_demo_config(steps), out, device=device, progress=progress)
    sampling = run.effective_sampling(DEMO_SAMPLING)  # steps and guidance as numbers: the text model's defaults
    with SamplingBar(len(TEXT_PROMPTS) * TEXT_PER_PROMPT, sampling.batch_size, sampling.steps, enabled=progress) as bar:
        drawn = run.sample_prompts(list(TEXT_PROMPTS), TEXT_PER_PROMPT, sampling, callback=bar)
    grid = out / "samples.png"
    make_grid(to_uint8(drawn.images), nrow=TEXT_PER_PROMPT, labels=list(TEXT_PROMPTS), scale=3).save(grid)
    scenes = faithfulness.eval_scenes()
    with SamplingBar(len(scenes.scenes), sampling.batch_size, sampling.steps, enabled=progress) as bar:
        report = prompt_faithfulness(run, sampling, callback=bar, scenes=scenes)
    table = out / "faithfulness.json"
    write_text_atomic(table, json.dumps({"sampling": sampling.to_dict(), **report.to_dict()}, indent=2) + "\n")
    print("\n".join(["prompt faithfulness (evaluation/faithfulness.py):", *report.lines()]))
    paths = {"samples grid": grid, "faithfulness": table}
    paths.update(refresh_page(out))
    paths["run directory"] = out
    return paths
