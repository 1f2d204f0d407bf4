"""Write an evaluation: eval.json (every number and setting), samples.png (one row per class), a grid per class
(classes/<name>.png), and report.md and report.html that show the numbers beside the pictures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from ddpm.common.files import write_text_atomic
from ddpm.pictures.grid import make_grid
from ddpm.pictures.pages import esc, eval_numbers, figure, page, table


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The headline numbers, one per line, for the terminal."""
    lines = [f"{name}: {value}" for name, value in eval_numbers(result, per_class=False)]
    lines.append("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in result["seconds"].items()))
    return lines + [f"warning: {w}" for w in result["warnings"]]


def _accuracy(result: dict[str, Any], name: str) -> str:
    acc = result["metrics"].get("per_class_accuracy", {}).get(name)
    if acc is None:
        return ""
    return "accuracy n/a" if math.isnan(acc) else f"accuracy {acc:.1%}"


def markdown(result: dict[str, Any], grid_name: str, class_grids: dict[str, str] | None = None) -> str:
    s, m = result["settings"], result["metrics"]
    rows = [("setting", "value")] + [(k, str(v)) for k, v in s.items()]
    text = ["# Evaluation", "", f"Checkpoint step {result['checkpoint_step']}; {result['num_generated']} generated images "
            f"({result['num_generated'] // len(result['classes'])} per class) against {result['num_real']} real "
            f"`{s['split']}` images.", "", "## Numbers", ""]
    text += [f"- {line}" for line in summary_lines(result)]
    if "per_class_accuracy" in m:
        text += ["", "## Per-class accuracy", "", "| class | accuracy |", "|---|---|"]
        text += [f"| {c} | {'n/a' if math.isnan(a) else f'{a:.1%}'} |" for c, a in m["per_class_accuracy"].items()]
    text += ["", "## Samples", "", f"![one row per class]({grid_name})"]
    for name, path in (class_grids or {}).items():
        text += ["", f"### {name}", "", f"{_accuracy(result, name)}", "", f"![{name}]({path})"]
    text += ["", "## Settings", "", "| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows[1:]]
    return "\n".join(text) + "\n"


def html(result: dict[str, Any], grid_name: str, class_grids: dict[str, str]) -> str:
    """The report as one HTML page: numbers, the grid, each class's grid with its accuracy, the settings."""
    s = result["settings"]
    body = [f"<p>Checkpoint step {esc(result['checkpoint_step'])}; {esc(result['num_generated'])} generated images "
            f"against {esc(result['num_real'])} real <code>{esc(s['split'])}</code> images "
            f"({esc(s['sampler'])}, {esc(s['steps'])} steps, guidance {esc(s['guidance'])}).</p>",
            "<h2>Numbers</h2>", table(eval_numbers(result), ("metric", "value"))]
    body += [f"<p><strong>warning:</strong> {esc(w)}</p>" for w in result["warnings"]]
    body += ["<p>" + esc("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in result["seconds"].items())) + "</p>"]
    body += ["<h2>Samples</h2>", figure(grid_name, "one row per class", "samples, one row per class")]
    for name, path in class_grids.items():
        body += [f"<h3>{esc(name)}</h3>", figure(path, _accuracy(result, name) or "generated images", f"generated {name}")]
    body += ["<h2>Settings</h2>", table(s.items(), ("setting", "value")),
             '<p><a href="eval.json">eval.json</a> holds every number.</p>']
    return page("Evaluation", body)


def class_grid_files(result: dict[str, Any], images: torch.Tensor, out_dir: Path, per_class_max: int = 30,
                     per_row: int = 10) -> dict[str, str]:
    """classes/<i>-<name>.png: the first `per_class_max` images of each class; {class name: relative path}."""
    k = len(result["classes"])
    per_class = len(images) // k
    (out_dir / "classes").mkdir(parents=True, exist_ok=True)
    grids = {}
    for c, name in enumerate(result["classes"]):
        rel = f"classes/{c}-{''.join(ch if ch.isalnum() else '-' for ch in name)}.png"
        x = images[c * per_class: c * per_class + min(per_class_max, per_class)]
        make_grid(x, nrow=min(per_row, len(x)), scale=2).save(out_dir / rel)
        grids[name] = rel
    return grids


def write_report(result: dict[str, Any], images: torch.Tensor, out_dir: Path, per_row: int = 10) -> dict[str, Path]:
    """eval.json, samples.png (the first `per_row` images of each class), classes/*.png, report.md and report.html
    under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    k = len(result["classes"])
    per_class = len(images) // k
    pick = torch.cat([torch.arange(c * per_class, c * per_class + min(per_row, per_class)) for c in range(k)])
    grid = out_dir / "samples.png"
    make_grid(images[pick], nrow=min(per_row, per_class), labels=result["classes"], scale=2).save(grid)
    class_grids = class_grid_files(result, images, out_dir)
    paths = {"json": out_dir / "eval.json", "report": out_dir / "report.md", "html report": out_dir / "report.html",
             "grid": grid, "class grids": out_dir / "classes"}
    write_text_atomic(paths["json"], json.dumps(result, indent=2, allow_nan=True) + "\n")
    write_text_atomic(paths["report"], markdown(result, grid.name, class_grids))
    write_text_atomic(paths["html report"], html(result, grid.name, class_grids))
    return paths
