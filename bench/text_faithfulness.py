"""Prompt faithfulness of text-conditioned runs on builtin:shapes-text: each run draws one image for every
evaluation scene's caption (evaluation/faithfulness.eval_scenes: seen and held-out colour-shape pairs), and the
report gives colour, shape, object, count, position and scene accuracy on both, beside chance.

    .venv/bin/python bench/text_faithfulness.py RUN [RUN ...] [--seen 100 --held-out 100 --sampler ddim --steps 20
                                                              --guidance W [W ...] --seed 0]
(--guidance: the model's default, 7 for a text model, unless given)
Prints a table per run and one JSON line each.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ddpm.api import load_run
from ddpm.common.pixels import to_uint8
from ddpm.diffusion.sampling import SamplingConfig
from ddpm.evaluation.faithfulness import eval_scenes, faithfulness


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--seen", type=int, default=100)
    ap.add_argument("--held-out", type=int, default=100)
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, nargs="+", default=[None])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    scenes = eval_scenes(args.seen, args.held_out)
    for path in args.runs:
        run = load_run(path)
        for asked in args.guidance:
            w = SamplingConfig(guidance=asked).guidance_for(run.conditioning)
            start = time.perf_counter()
            images = run.sample_each(scenes.prompts, sampler=args.sampler, steps=args.steps, guidance=w,
                                     seed=args.seed, batch_size=100)  # each scene from its own noise
            report = faithfulness(to_uint8(images), scenes.scenes)
            print(f"{path}  step {run.step}  text_tokens {run.config.model.text_tokens}  guidance {w}  "
                  f"({time.perf_counter() - start:.0f} s)")
            print("\n".join(report.lines()))
            print(json.dumps({"run": str(path), "step": run.step, "text_tokens": run.config.model.text_tokens,
                              "guidance": w, "sampler": args.sampler, "steps": args.steps, **report.to_dict()}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
