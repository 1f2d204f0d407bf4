"""`ddpm data inspect`: what a dataset folder holds, what would be skipped and why, and a contact sheet.

The report is built from the same scan and cache as training (folder.py, cache.py), so inspecting at
the training size and channels also warms the cache for training. A class with no readable image is reported
(count 0), not raised, so the report shows every problem at once. Paths in the report are text (common/ostext), like
the class names: a file name that is not UTF-8 cannot stop the report from being printed or read as JSON.
A built-in set (`builtin:...` as the path) is reported at its native size and channels (probe.py), split by split.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddpm.common.errors import UserError
from ddpm.common.ostext import as_text
from ddpm.data.cache import open_cache
from ddpm.data.folder import scan_folder
from ddpm.data.probe import probe_shape
from ddpm.data.shapes_text import HELD_OUT, SHAPES_TEXT
from ddpm.data.transforms import DecodeSpec

SIZE_BINS = (64, 128, 256, 512, 1024)  # shorter-side histogram edges, px
MAX_PER_CLASS = 1_000  # images in one row of the contact sheet


def per_class_check(count: object) -> str | None:
    """None when `count` is a number of contact-sheet images per class `inspect_folder` takes, else what was
    expected (`ddpm data inspect --per-class`)."""
    ok = isinstance(count, int) and not isinstance(count, bool) and 1 <= count <= MAX_PER_CLASS
    return None if ok else f"a whole number from 1 to {MAX_PER_CLASS:,}"


def size_bin(w: int, h: int) -> str:
    """Shorter side -> a label such as '128-255 px', '<64 px' or '>=1024 px'."""
    s = min(w, h)
    if s < SIZE_BINS[0]:
        return f"<{SIZE_BINS[0]} px"
    for lo, hi in zip(SIZE_BINS, SIZE_BINS[1:]):
        if s < hi:
            return f"{lo}-{hi - 1} px"
    return f">={SIZE_BINS[-1]} px"


def inspect_folder(root: Path, image_size: int = 64, channels: int = 3, per_class: int = 8, min_size: int = 16,
                   sheet: Path | None = None, cache_dir: Path | None = None, progress: bool = False) -> dict[str, Any]:
    """The report as a JSON-ready dict; with `sheet`, also writes a contact-sheet PNG (one row per class)."""
    if per_class_check(per_class):
        raise UserError(f"--per-class must be {per_class_check(per_class)}, got {per_class!r}")
    if str(root).startswith("builtin:"):
        return inspect_builtin(str(root), per_class, sheet)
    index = scan_folder(root)
    entry = open_cache(index, DecodeSpec(image_size, channels), min_size, cache_dir, progress)
    labels = np.array([index.files[i].label for i in entry.kept], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(index.class_names))
    skipped = index.skipped + entry.skipped
    report: dict[str, Any] = {
        "root": as_text(str(root)),
        "images": int(len(labels)),
        "classes": [{"name": n, "aliases": index.aliases.get(n, []), "count": int(counts[c])}
                    for c, n in enumerate(index.class_names)],
        "empty_classes": [n for c, n in enumerate(index.class_names) if counts[c] == 0],
        "sizes": dict(Counter(size_bin(w, h) for w, h in entry.sizes).most_common()),
        "modes": dict(Counter(entry.modes).most_common()),
        "captioned": sum(bool(index.files[i].captions) for i in entry.kept) if index.captioned else 0,
        "skipped": [{"path": as_text(p), "reason": as_text(r)} for p, r in skipped],
        "skipped_by_reason": dict(Counter(r.split(" (")[0] for _, r in skipped).most_common()),
    }
    if sheet is not None and len(labels):
        contact_sheet(entry.images, labels, index.class_names, per_class).save(sheet)
        report["contact_sheet"] = as_text(str(sheet))
    return report


def inspect_builtin(source: str, per_class: int = 8, sheet: Path | None = None) -> dict[str, Any]:
    """The report of a built-in set (its train split, with the other splits' sizes); `sheet` as in inspect_folder."""
    from ddpm.data.dataset import load_dataset

    shape = probe_shape(source)
    data = load_dataset(source, shape.image_size, shape.channels, "train")
    counts = np.bincount(data.labels.numpy(), minlength=len(data.class_names))
    report: dict[str, Any] = {
        "root": source, "images": len(data),
        "classes": [{"name": n, "aliases": [], "count": int(counts[c])} for c, n in enumerate(data.class_names)],
        "empty_classes": [], "sizes": {f"{shape.image_size} px (built in)": len(data)},
        "modes": {"RGB" if shape.channels == 3 else "L": len(data)},
        "captioned": len(data) if data.captions else 0, "skipped": [], "skipped_by_reason": {},
        "splits": {split: len(load_dataset(source, shape.image_size, shape.channels, split))
                   for split in (("train", "test-seen", "test-held-out") if source == SHAPES_TEXT else ("train", "test"))},
    }
    if source == SHAPES_TEXT:
        report["held_out_pairs"] = [f"{c} {s}" for c, s in HELD_OUT]
        report["caption_examples"] = data.captions[0] if data.captions else []
    if sheet is not None:
        contact_sheet(data.images, data.labels.numpy(), data.class_names, per_class).save(sheet)
        report["contact_sheet"] = str(sheet)
    return report


def contact_sheet(images, labels: np.ndarray, class_names: list[str], per_class: int):
    """First-to-last evenly spaced `per_class` images of each class, one labelled row per class (PIL image)."""
    from ddpm.pictures.grid import make_grid

    rows, names = [], []
    for c, name in enumerate(class_names):
        idx = np.flatnonzero(labels == c)
        if not len(idx):
            continue
        pick = idx[np.linspace(0, len(idx) - 1, min(per_class, len(idx))).round().astype(int)]
        x = images[torch.from_numpy(pick)]  # (k, C, S, S) uint8
        pad = torch.zeros((per_class - len(pick), *x.shape[1:]), dtype=torch.uint8)
        rows.append(torch.cat([x, pad]))
        names.append(name)
    return make_grid(torch.cat(rows), nrow=per_class, labels=names)


def format_report(r: dict[str, Any]) -> str:
    """The report as text for a terminal."""
    width = max(len(c["name"]) for c in r["classes"])
    lines = [f"{r['root']}: {r['images']:,} images in {len(r['classes'])} classes"]
    for c in r["classes"]:
        alias = f"  (folder {', '.join(c['aliases'])})" if c["aliases"] else ""
        lines.append(f"  {c['name']:<{width}} {c['count']:>8,}{alias}")
    if r["empty_classes"]:
        lines.append(f"classes with no readable image (training would stop): {', '.join(r['empty_classes'])}")
    lines.append("shorter side: " + ", ".join(f"{k}: {v:,}" for k, v in r["sizes"].items()))
    lines.append("modes: " + ", ".join(f"{k}: {v:,}" for k, v in r["modes"].items()))
    if r["captioned"]:
        lines.append(f"captioned images: {r['captioned']:,}")
    if "splits" in r:
        lines.append("splits: " + ", ".join(f"{k}: {v:,}" for k, v in r["splits"].items()))
    if "held_out_pairs" in r:
        lines.append("never in train: " + ", ".join(r["held_out_pairs"]))
        lines.append("captions of the first image: " + " | ".join(r["caption_examples"]))
    lines.append(f"skipped: {len(r['skipped'])}" + "".join(f"\n  {s['path']}: {s['reason']}" for s in r["skipped"]))
    if "contact_sheet" in r:
        lines.append(f"contact sheet: {r['contact_sheet']}")
    return "\n".join(lines)
