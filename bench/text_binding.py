"""When does a text model decide which colour (or shape) goes where? A probe of a trained shapes-text run at fixed
noise levels.

For the two-object evaluation scenes whose objects differ in colour (evaluation/faithfulness.eval_scenes; 54 of the
default 200), at each noise level t the network sees x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, with x0 either

    the true render of the scene              -> "image right": the predicted x0_hat puts the two colours where the
                                                 caption says (from what x_t still shows and what the caption says)
    the render with the two colours swapped   -> "caption wins": x0_hat follows the caption against the picture

and the caption (its first phrasing, as the evaluation prompts it). x0_hat is read by the two objects' regions
(faithfulness.region: the image halves their positions name): it places the colours right when
(mean(region a) - mean(region b)) . (colour a - colour b) > 0, a test that the background (the same in both
regions, on average) cannot decide. At the highest noise x_t holds nothing of x0 and only the caption can place the
colours; at the lowest it holds everything. Where the two curves cross is where a sampler commits the colours.

`--swap shapes` asks the same of shapes: the two-object scenes whose objects differ in shape (49 of the 200), the
render with the two shapes exchanged, and x0_hat read by the scene probe (evaluation/scene_probe.py): right when
it sees each named shape at its object's place. A single x0_hat at high noise is too blurred for the probe to see
any shape (both columns near 0 there); the columns say from which t the drawn shapes follow the picture.

    .venv/bin/python bench/text_binding.py RUN [RUN ...] [--swap colours|shapes] [--guidance 1 3]
        [--t 999 950 900 800 700 500 300]
Prints a table per run (one row per t) and one JSON line each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from ddpm.api import load_run
from ddpm.common.pixels import to_model_range, to_uint8
from ddpm.data.shapes_text import COLOURS, Scene, caption, render
from ddpm.evaluation.faithfulness import eval_scenes, region, shape_outcomes, two_colours, two_shapes
from ddpm.evaluation.scene_probe import load_probe, read_places


def swap(scene: Scene, attribute: str) -> Scene:
    """The scene with its two objects' `attribute` ("colour" or "shape") exchanged."""
    a, b = scene.objects
    return dataclasses.replace(scene, objects=(dataclasses.replace(a, **{attribute: getattr(b, attribute)}),
                                               dataclasses.replace(b, **{attribute: getattr(a, attribute)})))


def placed_right(x0: torch.Tensor, scenes: list[Scene]) -> float:
    """Share of images x0 (N, 3, H, W) in [-1, 1] whose region difference points along the named colours'."""
    right = 0
    for image, scene in zip(x0, scenes):
        a, b = scene.objects
        means = [image[:, rows, cols].reshape(3, -1).mean(1) for rows, cols in (region(a.position), region(b.position))]
        palette = [to_model_range(torch.tensor(COLOURS[o.colour])) for o in (a, b)]
        right += bool(((means[0] - means[1]) * (palette[0] - palette[1])).sum() > 0)
    return right / len(scenes)


def shapes_placed_right(x0: torch.Tensor, scenes: list[Scene]) -> float:
    """Share of images x0 (N, 3, H, W) in [-1, 1] of two-shape scenes where the probe sees each object's shape at
    its place (faithfulness.shape_outcomes' "right")."""
    places = read_places(load_probe(), to_uint8(x0).numpy())
    return shape_outcomes(places, tuple(scenes))["right"] / len(scenes)


def x0_prediction(run, x_t: torch.Tensor, t: int, cond: torch.Tensor, guidance: float) -> torch.Tensor:
    """The guided network's x0 at step t (v: x0 = sqrt(ab) x_t - sqrt(1 - ab) v, exact at ab = 0 too; eps: the
    usual division by sqrt(ab))."""
    ab = run.schedule.alpha_bar_of(t)
    tt = torch.full((len(x_t),), t)
    out_c, out_u = run.model(x_t, tt, cond), run.model(x_t, tt, torch.zeros_like(cond))
    out = out_u + guidance * (out_c - out_u)
    if run.config.diffusion.prediction == "v":
        return ab ** 0.5 * x_t - (1 - ab) ** 0.5 * out
    return (x_t - (1 - ab) ** 0.5 * out) / max(ab, 1e-12) ** 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0])
    ap.add_argument("--t", type=int, nargs="+", default=[999, 950, 900, 800, 700, 500, 300])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--swap", choices=["colours", "shapes"], default="colours")
    args = ap.parse_args()
    attribute, keep, read = {"colours": ("colour", two_colours, placed_right),
                             "shapes": ("shape", two_shapes, shapes_placed_right)}[args.swap]
    scenes = [s for s in eval_scenes().scenes if keep(s)]
    true = to_model_range(torch.from_numpy(render(scenes)))  # (N, 3, 32, 32)
    swapped = to_model_range(torch.from_numpy(render([swap(s, attribute) for s in scenes])))
    assert read(true, scenes) == 1.0 and read(swapped, scenes) == 0.0  # the reading itself
    for path in args.runs:
        run = load_run(path)
        run.model.eval()
        cond, _ = run.resolve_prompts([caption(s, 0) for s in scenes])
        rows = []
        for t in args.t:
            ab = run.schedule.alpha_bar_of(t)
            eps = torch.randn(true.shape, generator=torch.Generator().manual_seed(args.seed + t))
            row = {"t": t, "alpha_bar": ab}
            with torch.no_grad():
                for w in args.guidance:
                    for name, x0 in (("image right", true), ("caption wins", swapped)):
                        x_t = ab ** 0.5 * x0 + (1 - ab) ** 0.5 * eps
                        row[f"{name} w={w:g}"] = read(x0_prediction(run, x_t, t, cond, w), scenes)
            rows.append(row)
        print(f"{path}: {len(scenes)} two-object scenes of two {args.swap}")
        keys = [k for k in rows[0] if k not in ("t", "alpha_bar")]
        print(f"{'t':>5} {'alpha_bar':>10} " + " ".join(f"{k:>18}" for k in keys))
        for r in rows:
            print(f"{r['t']:>5} {r['alpha_bar']:>10.4f} " + " ".join(f"{r[k]:>18.2f}" for k in keys))
        print(json.dumps({"run": str(path), "swap": args.swap, "scenes": len(scenes), "rows": rows}))


if __name__ == "__main__":
    main()
