"""`ddpm data inspect`, `ddpm train` on a generated Animals-10 tree, and the data error paths (exit code 2)."""

import json
import subprocess
import sys

import pytest
from data_trees import BAD_KINDS, animals_tree
from PIL import Image

from ddpm.cli import main

TINY = ["--image-size", "16", "--channels", "3", "--base-channels", "8", "--channel-mults", "1,2", "--num-res-blocks",
        "1", "--attention-resolutions", "8", "--timesteps", "20", "--steps", "2", "--batch-size", "4", "--quiet",
        "--precision", "fp32", "--sample-every", "0"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_CACHE_DIR", str(tmp_path / "cache"))


def test_inspect_reports_classes_skips_and_writes_a_sheet(tmp_path, capsys):
    root = animals_tree(tmp_path / "raw-img", bad=True)
    sheet = tmp_path / "out" / "sheet.png"
    assert main(["data", "inspect", str(root), "--json", "--sheet", str(sheet), "--per-class", "2",
                 "--image-size", "16"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert [(c["name"], c["count"], c["aliases"]) for c in r["classes"]] == [
        ("butterfly", 2, ["farfalla"]), ("cat", 3, ["gatto"]), ("dog", 3, ["cane"])]
    assert r["images"] == 8 and len(r["skipped"]) == len(BAD_KINDS) and r["skipped_by_reason"]["corrupt or truncated"] == 2
    assert r["modes"]["RGB"] == 2 and {"CMYK", "LA", "P", "RGBA", "L"} <= set(r["modes"])
    assert sum(r["sizes"].values()) == 8
    with Image.open(sheet) as im:
        assert im.height == 3 * (16 + 2) + 2  # one row per class
    assert main(["data", "inspect", str(root), "--sheet", str(sheet), "--image-size", "16", "--quiet", "--force"]) == 0
    text = capsys.readouterr().out
    assert "8 images in 3 classes" in text and "dog" in text and "(folder cane)" in text and "bomb.png" in text


def test_train_on_a_folder_with_balance_records_classes_and_aliases(tmp_path, capsys):
    root = animals_tree(tmp_path / "raw-img", bad=True)
    out = tmp_path / "run"
    assert main(["train", "--data", str(root), "--out", str(out), "--balance", "--crop", "random",
                 "--cache-dir", str(tmp_path / "c"), *TINY]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"]["class_names"] == ["butterfly", "cat", "dog"] and cfg["data"]["aliases"]["dog"] == ["cane"]
    assert cfg["train"]["balance"] is True and cfg["data"]["crop"] == "random"
    assert any((tmp_path / "c" / "images").iterdir())
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(out), "cane", "cat", "-n", "1", "--steps", "2", "--quiet",
                 "--out", str(tmp_path / "g.png")]) == 0  # the Italian alias is a prompt


def run_cli(*args: str, env_cache: str) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, DDPM_CACHE_DIR=env_cache)
    return subprocess.run([sys.executable, "-m", "ddpm", *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("layout,needle", [
    ("missing", "does not exist"),
    ("empty", "has no class subfolders"),
    ("bad-class", "class 'spider'"),
])
def test_data_errors_exit_2_with_one_line(tmp_path, layout, needle):
    root = tmp_path / "d"
    if layout == "empty":
        root.mkdir()
    elif layout == "bad-class":
        animals_tree(root)
        (root / "ragno").mkdir()
        (root / "ragno" / "x.jpg").write_bytes(b"")
    result = run_cli("train", "--data", str(root), "--out", str(tmp_path / "run"), *TINY, env_cache=str(tmp_path / "c"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("ddpm train: error:") and needle in lines[-1], result.stderr
    assert all(line.startswith("ddpm: warning: ") for line in lines[:-1])  # skipped files, one line each
    if layout == "missing":
        inspect = run_cli("data", "inspect", str(root), env_cache=str(tmp_path / "c"))
        assert inspect.returncode == 2 and inspect.stderr.count("\n") == 1 and needle in inspect.stderr
