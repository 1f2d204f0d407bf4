"""The HTML pages: a run's index.html and the eval report's report.html parse, show what exists and link only to
files that exist; `ddpm eval --json` prints eval.json."""

from __future__ import annotations

import contextlib
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import tiny_config
from PIL import Image

from ddpm.cli import main
from ddpm.launch import train_run
from ddpm.pictures.pages import run_index, write_run_index


class Links(HTMLParser):
    """Every href and src of a page, and its title; fails on unbalanced tags."""

    VOID = {"img", "meta", "br", "link", "input", "hr"}

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.stack: list[str] = []
        self.title = ""

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)
        self.links += [v for k, v in attrs if k in ("href", "src") and v]

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "title":
            self.title += data


def parse(path: Path) -> Links:
    links = Links()
    links.feed(path.read_text())
    links.close()
    assert not links.stack, f"unclosed tags {links.stack}"
    return links


def assert_links_exist(page: Path) -> list[str]:
    links = parse(page).links
    for link in links:
        assert not link.startswith(("http:", "https:", "//")), f"{page} fetches {link} from the network"
        assert (page.parent / link).is_file(), f"{page} links to {link}, which does not exist"
    return links


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pages") / "run"
    train_run(tiny_config(steps=3), out, progress=False)
    return out


@pytest.fixture(scope="module")
def evaluated(run_dir):
    """`ddpm eval --json --out RUN/eval` on the tiny run: (its folder, what it printed on stdout)."""
    out, stdout = run_dir / "eval", io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["eval", "--checkpoint", str(run_dir), "--num-samples", "20", "--steps", "2", "--no-inception",
                     "--quiet", "--json", "--out", str(out)]) == 0
    return out, stdout.getvalue()


def test_eval_json_and_report_pages(evaluated):
    out, printed = evaluated
    assert json.loads(printed) == json.loads((out / "eval.json").read_text())  # stdout holds the JSON alone
    links = assert_links_exist(out / "report.html")
    assert "samples.png" in links and "eval.json" in links
    assert sum(link.startswith("classes/") for link in links) == 2 * 10  # each class's grid, linked and shown
    with Image.open(out / "classes" / "9-zebra.png") as im:
        assert im.width > im.height > 0
    assert "classes/9-zebra.png" in (out / "report.md").read_text()


def test_run_index_links_what_exists(run_dir, evaluated):
    from ddpm.training.metrics import plot_training_curve

    assert "samples.png" not in run_index(run_dir)  # nothing drawn yet: nothing linked
    assert main(["sample", "--checkpoint", str(run_dir), "cat", "-n", "2", "--steps", "3", "--quiet", "--out",
                 str(run_dir / "samples.png"), "--trajectory", str(run_dir / "trajectory.gif")]) == 0
    plot_training_curve(run_dir / "metrics.jsonl", run_dir / "training_curve.png")
    index = write_run_index(run_dir)
    links = assert_links_exist(index)
    assert parse(index).title == f"ddpm run: {run_dir.name}"
    for name in ("samples.png", "trajectory.gif", "trajectory_x0.png", "training_curve.png", "config.json"):
        assert name in links
    assert "eval/eval.json" in links and "eval/report.html" in links  # the eval numbers, and its report
    assert "generated / real images" in index.read_text()


def test_prompt_faithfulness_rows_name_both_groups_and_chance():
    """A text model's eval.json carries faithfulness per attribute for seen and held-out pairs; the one formatting
    of evaluation numbers shows each as 'seen / held-out' beside its chance levels."""
    from ddpm.pictures.pages import eval_numbers

    attrs = ("colour", "shape")
    result = {"metrics": {"faithfulness": {
        "seen": {"colour": 0.97, "shape": 0.905}, "held_out": {"colour": 0.88, "shape": 0.5},
        "chance": {"seen": {"colour": 0.24, "shape": 0.34}, "held_out": {"colour": 0.21, "shape": 0.3}}}},
        "num_generated": 4, "num_real": 4}
    rows = dict(eval_numbers(result))
    assert rows["prompt faithfulness: colour (seen / held-out pairs; chance 24% / 21%)"] == "97.0% / 88.0%"
    assert rows["prompt faithfulness: shape (seen / held-out pairs; chance 34% / 30%)"] == "90.5% / 50.0%"
    assert sum(k.startswith("prompt faithfulness") for k in rows) == len(attrs)
