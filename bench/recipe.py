"""Issue 15, item 1, end to end: which power-EMA width sigma_rel to make the default, against the demo's fixed decay
0.995 on the demo's budget; and the new defaults against the old ones on the same tiny model and budget.

    PYTHONPATH=src .venv/bin/python bench/recipe.py                       # everything, into /work/bench-out
    PYTHONPATH=src .venv/bin/python bench/recipe.py --out DIR --only train-demo eval:ema/power-0.10
    PYTHONPATH=src .venv/bin/python bench/recipe.py --summary             # the tables from what is there

Steps, in this order (each is one command, logged to OUT/logs/<step>.log, its wall time added to OUT/timings.json; a
step whose output exists is skipped, so an interrupted recipe continues where it stopped):
  half-life       bench/ema_policy.py --half-life: the closed-form and exact half-lives (1,000 and 200,000 steps)
  clf             ddpm classifier train (the domain classifier of per-class accuracy and classifier FID)
  train-demo      bench/ema_policy.py: the demo recipe with the power EMA 0.10, shadows for the other policies
  eval:ema/...    ddpm eval of the demo run's checkpoints (as below), then
  train-old       bench/ema_policy.py --recipe old: the old defaults (fixed EMA 0.999), the same shadows
  eval:ema/..., eval:old/...: ddpm eval, N = 500, 50 ancestral steps, guidance 3, seed 0 (the same per-image seeds for every
                  checkpoint, so policies are compared on the same noise). With Inception (FID/KID against the
                  1,000 test images; the reference features are computed once, in OUT/cache) for ema/power-0.10 (the
                  new default), ema/fixed-0.995 (the demo's policy) and old/fixed-0.999 (the old defaults); classifier
                  numbers only (--no-inception) for the other widths and for old/power-0.10 (the old recipe with the
                  new EMA: separates the EMA from the rest of the recipe). An eval with Inception samples the same
                  images as one without, so its classifier numbers are those of a --no-inception run.
Then the summary: OUT/summary.json and markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
EVAL_FLAGS = ["--num-samples", "500", "--sampler", "ddpm", "--steps", "50", "--guidance", "3", "--seed", "0"]
# (checkpoint folder under OUT, with Inception)
EVALS = [("ema/power-0.10", True), ("ema/fixed-0.995", True), ("old/fixed-0.999", True),
         ("ema/power-0.05", False), ("ema/power-0.15", False), ("ema/power-0.20", False),
         ("old/power-0.10", False)]


def steps(out: Path) -> dict[str, tuple[list[str], Path]]:
    """step name -> (command, the file whose existence means done)."""
    py, ddpm = [sys.executable], [sys.executable, "-m", "ddpm"]
    clf = out / "clf.safetensors"
    table = {
        "half-life": (py + [str(HERE / "ema_policy.py"), "--half-life"], out / "half_life.md"),
        "clf": (ddpm + ["classifier", "train", "--data", "builtin:animal-shapes", "--image-size", "28",
                        "--out", str(clf), "--quiet"], clf),
        "train-demo": (py + [str(HERE / "ema_policy.py"), "--out", str(out / "ema"), "--quiet"],
                       out / "ema" / "results.json"),
        "train-old": (py + [str(HERE / "ema_policy.py"), "--recipe", "old", "--out", str(out / "old"), "--quiet"],
                      out / "old" / "results.json"),
    }
    evals = {}
    for ckpt, inception in EVALS:
        dest = out / "eval" / ckpt.replace("/", "_")
        cmd = ddpm + ["eval", "--checkpoint", str(out / ckpt / "checkpoint.safetensors"), "--classifier", str(clf),
                      *EVAL_FLAGS, "--cache-dir", str(out / "cache"), "--device", "cpu", "--out", str(dest), "--quiet"]
        if not inception:
            cmd.append("--no-inception")
        evals[f"eval:{ckpt}"] = (cmd, dest / "eval.json")
    # the demo run's evaluations before the old run is trained: the answer to the main question comes first
    order = ["half-life", "clf", "train-demo", *(k for k in evals if k.startswith("eval:ema/")), "train-old",
             *(k for k in evals if k.startswith("eval:old/"))]
    table.update(evals)
    return {k: table[k] for k in order}


def run_step(name: str, cmd: list[str], done: Path, out: Path) -> None:
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / (name.replace(":", "_").replace("/", "_") + ".log")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    shown = " ".join(cmd).replace(sys.executable, "python")
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {shown}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        f.write(f"$ {shown}\n")
        f.flush()
        rc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE if name == "half-life" else f, stderr=f, env=env,
                            text=True)
    wall = time.perf_counter() - t0
    if name == "half-life" and rc.returncode == 0:
        lines = rc.stdout.splitlines()
        done.write_text("\n".join(line for line in lines if line.startswith("|")) + "\n")
        (out / "half_life.json").write_text(lines[-1] + "\n")
    if rc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {rc.returncode}); see {log}")
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    timings[name] = {"wall_s": round(wall, 1), "command": shown, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    timings_path.write_text(json.dumps(timings, indent=1) + "\n")
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {wall:.0f} s", flush=True)


def summary(out: Path) -> dict:
    timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").exists() else {}
    runs = {r: json.loads((out / r / "results.json").read_text()) for r in ("ema", "old")
            if (out / r / "results.json").exists()}
    rows = []
    for ckpt, _ in EVALS:
        run, policy = ckpt.split("/")
        path = out / "eval" / ckpt.replace("/", "_") / "eval.json"
        if not path.exists():
            continue
        e = json.loads(path.read_text())
        m, r = e["metrics"], runs.get(run, {})
        pol = r.get("policies", {}).get(policy, {})
        rows.append({
            "recipe": {"ema": "new (demo recipe)", "old": "old defaults"}[run], "policy": policy,
            "accuracy": m.get("accuracy"), "per_class_accuracy": m.get("per_class_accuracy"),
            "classifier_fid": m.get("classifier_fid"), "classifier_score": m.get("classifier_score", {}).get("mean"),
            "fid": m.get("fid"), "kid": m.get("kid", {}).get("mean"), "kid_std": m.get("kid", {}).get("std"),
            "num_generated": e.get("num_generated"), "num_real": e.get("num_real"),
            "train_wall_s": timings.get(f"train-{'demo' if run == 'ema' else 'old'}", {}).get("wall_s"),
            "train_loop_wall_s": r.get("train_wall_s"), "final_loss": r.get("final_loss"),
            "loss_last_100_steps": r.get("loss_last_100_steps"), "own_policy": r.get("own_policy") == policy,
            "mass_half_life": pol.get("mass_half_life"), "sigma_rel_effective": pol.get("sigma_rel"),
            "rel_distance_to_raw": pol.get("rel_distance_to_raw"),
            "eval_wall_s": timings.get(f"eval:{ckpt}", {}).get("wall_s"), "eval_seconds": e.get("seconds"),
        })
    result = {"rows": rows, "timings": timings,
              "runs": {k: {x: v[x] for x in ("train_wall_s", "final_loss", "loss_last_100_steps",
                                              "median_images_per_s", "own_policy", "fixed_0.995_equals_0.999")}
                       for k, v in runs.items()}}
    (out / "summary.json").write_text(json.dumps(result, indent=1) + "\n")

    def f(v, fmt):
        return "—" if v is None else format(v, fmt)

    print("| recipe | EMA | per-class acc. (N=500) | weakest | classifier FID | Inception FID | KID | "
          "EMA half-life (steps) | train wall (s) | final loss |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        acc = r["per_class_accuracy"] or {}
        weak = ", ".join(f"{k} {v:.0%}" for k, v in sorted(acc.items(), key=lambda kv: kv[1])[:2])
        kid = "—" if r["kid"] is None else f"{r['kid']:.4f} ± {r['kid_std']:.4f}"
        print(f"| {r['recipe']} | {r['policy']}{' (run)' if r['own_policy'] else ''} | {f(r['accuracy'], '.1%')} | "
              f"{weak} | {f(r['classifier_fid'], '.2f')} | {f(r['fid'], '.1f')} | {kid} | "
              f"{f(r['mass_half_life'], '.0f')} | {f(r['train_wall_s'], '.0f')} | {f(r['final_loss'], '.4f')} |")
    if (out / "half_life.md").exists():
        print()
        print((out / "half_life.md").read_text(), end="")
    print()
    for name, t in timings.items():
        print(f"{name}: {t['wall_s']:.0f} s")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("/work/bench-out"))
    p.add_argument("--only", nargs="+", metavar="STEP", help="run only these steps (names as above)")
    p.add_argument("--summary", action="store_true", help="only print the tables from what is there")
    args = p.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    table = steps(out)
    if not args.summary:
        unknown = set(args.only or []) - set(table)
        if unknown:
            p.error(f"unknown step(s) {', '.join(sorted(unknown))}; the steps: {', '.join(table)}")
        for name, (cmd, done) in table.items():
            if args.only and name not in args.only:
                continue
            if done.exists():
                print(f"{name}: done ({done})", flush=True)
                continue
            run_step(name, cmd, done, out)
    summary(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
