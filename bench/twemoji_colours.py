"""Colour words on Twemoji (issue 18): does a text model trained on the emoji folder (examples/twemoji/prepare.py)
draw "<colour> heart", "<colour> circle" and "<colour> square" in that colour, for red, orange, yellow, green,
blue and purple?

    .venv/bin/python bench/twemoji_colours.py RUN [--n 8 --sampler ddim --steps 20 --guidance W --seed 0]
(--guidance: the model's default, 7 for a text model, unless given; --objects diamond triangle asks
for other objects: Twemoji's diamonds are orange and blue only, and the only triangles it names by a colour are
red, so the other colours are compositions the model never saw)

Image j of prompt i starts from its own noise (seed, i * n + j), so the 18 x n images are independent draws
(`TrainedModel.sample_each`); `--noise shared` starts image j of every prompt from the same noise (seed, j), as
`ddpm sample` does to compare prompts, where one column's noise can set the colour of all 18 of its images.

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
    ap.add_argument("--noise", choices=("own", "shared"), default="own",
                    help="own: every image its own starting noise; shared: image j of every prompt the same one")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--objects", nargs="+", default=list(OBJECTS), metavar="WORDS",
                    help=f"the objects to colour (default: {' '.join(OBJECTS)})")
    ap.add_argument("--grid", default="", help="also write the images as a PNG grid (a row per prompt)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run = load_run(args.run)
    args.guidance = SamplingConfig(guidance=args.guidance).guidance_for(run.conditioning)
    captions = {c.lower() for c in run.run_captions()}
    prompts = [f"{c} {o}" for c in COLOURS for o in args.objects]
    start = time.perf_counter()
    options = {"sampler": args.sampler, "steps": args.steps, "guidance": args.guidance, "seed": args.seed,
               "batch_size": 100}
    if args.noise == "own":  # (P * n, 3, H, W), prompt-major
        drawn = run.sample_each([p for p in prompts for _ in range(args.n)], **options)
    else:
        drawn = run.sample_prompts(prompts, n=args.n, **options).images
    images = to_uint8(drawn).reshape(len(prompts), args.n, *drawn.shape[1:])  # (P, n, 3, H, W)
    seconds = time.perf_counter() - start
    hits = {p: sum(hue_word(images[i, j]) == p.split()[0] for j in range(args.n)) for i, p in enumerate(prompts)}
    print(f"{args.run}  step {run.step}  {args.sampler} {args.steps} steps, guidance {args.guidance}, "
          f"{args.n} images a prompt, {args.noise} noise ({seconds:.0f} s); * = a caption of the run word for word")
    print("| colour | " + " | ".join(args.objects) + " |\n|" + " --- |" * (len(args.objects) + 1))
    for c in COLOURS:
        cells = [f"{hits[f'{c} {o}']}/{args.n}{'*' if f'{c} {o}' in captions else ''}" for o in args.objects]
        print(f"| {c} | " + " | ".join(cells) + " |")
    accuracy = sum(hits.values()) / (len(prompts) * args.n)
    print(f"colour words right: {accuracy:.1%} of {len(prompts) * args.n} images")
    if args.grid:
        from ddpm.pictures.grid import make_grid
        make_grid(images.reshape(-1, *images.shape[2:]), args.n, labels=prompts, scale=2).save(args.grid)
    print(json.dumps({"run": args.run, "step": run.step, "sampler": args.sampler, "steps": args.steps,
                      "guidance": args.guidance, "n": args.n,
                      "noise": args.noise, "accuracy": accuracy, "hits": hits}))


if __name__ == "__main__":
    main()
