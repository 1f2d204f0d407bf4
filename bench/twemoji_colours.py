"""Colour words on Twemoji (issue 18): does a text model trained on the emoji folder (examples/twemoji/prepare.py)
draw "<colour> heart", "<colour> circle" and "<colour> square" in that colour, for red, orange, yellow, green,
blue and purple?

    .venv/bin/python bench/twemoji_colours.py RUN [--n 8 --sampler ddim --steps 20 --guidance W --seed 0]
(--guidance: the model's default, 7 for a text model, unless given)

Each of the 18 prompts draws n images; an image counts when the hue of its coloured pixels names the prompt's
colour (evaluation/faithfulness.hue_word: white background, grey and black outlines do not vote). The table marks
which prompts are one of the run's own captions word for word: "red heart" is not (that emoji is captioned "heavy
black heart" and "heart"), so it asks for a colour and a shape that were never named together.
Prints the 6 x 3 table (hits of n per cell), the accuracy, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ddpm.api import load_run
from ddpm.common.pixels import to_uint8
from ddpm.diffusion.sampling import SamplingConfig
from ddpm.evaluation.faithfulness import hue_word

COLOURS = ("red", "orange", "yellow", "green", "blue", "purple")
OBJECTS = ("heart", "circle", "square")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--n", type=int, default=8, help="images per prompt")
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid", default="", help="also write the images as a PNG grid (a row per prompt)")
    args = ap.parse_args()
    run = load_run(args.run)
    args.guidance = SamplingConfig(guidance=args.guidance).guidance_for(run.conditioning)
    captions = {c.lower() for c in run.run_captions()}
    prompts = [f"{c} {o}" for c in COLOURS for o in OBJECTS]
    start = time.perf_counter()
    out = run.sample_prompts(prompts, n=args.n, sampler=args.sampler, steps=args.steps, guidance=args.guidance,
                             seed=args.seed, batch_size=100)
    images = to_uint8(out.images).reshape(len(prompts), args.n, *out.images.shape[1:])  # (P, n, 3, H, W)
    seconds = time.perf_counter() - start
    hits = {p: sum(hue_word(images[i, j]) == p.split()[0] for j in range(args.n)) for i, p in enumerate(prompts)}
    print(f"{args.run}  step {run.step}  {args.sampler} {args.steps} steps, guidance {args.guidance}, "
          f"{args.n} images a prompt ({seconds:.0f} s); * = a caption of the run word for word")
    print("| colour | " + " | ".join(OBJECTS) + " |\n|" + " --- |" * (len(OBJECTS) + 1))
    for c in COLOURS:
        cells = [f"{hits[f'{c} {o}']}/{args.n}{'*' if f'{c} {o}' in captions else ''}" for o in OBJECTS]
        print(f"| {c} | " + " | ".join(cells) + " |")
    accuracy = sum(hits.values()) / (len(prompts) * args.n)
    print(f"colour words right: {accuracy:.1%} of {len(prompts) * args.n} images")
    if args.grid:
        from ddpm.pictures.grid import make_grid
        make_grid(images.reshape(-1, *images.shape[2:]), args.n, labels=prompts, scale=2).save(args.grid)
    print(json.dumps({"run": args.run, "step": run.step, "sampler": args.sampler, "steps": args.steps,
                      "guidance": args.guidance, "n": args.n, "accuracy": accuracy, "hits": hits}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
