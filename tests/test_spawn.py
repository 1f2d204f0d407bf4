"""Every multiprocessing path under the spawn start method, the only one Windows has (macOS's default too), run
here on Linux by forcing it in a fresh interpreter. Today that path is the folder decoder of data/cache.py; ddpm
has no DataLoader workers, and torchrun starts its workers as subprocesses. The last test keeps that list honest."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from data_trees import animals_tree

import ddpm.data.cache as datacache
from ddpm.data.folder import scan_folder
from ddpm.data.transforms import DecodeSpec

SRC = Path(datacache.__file__).resolve().parents[1]  # src/ddpm
# the interpreters started here import the ddpm under test, whatever folder they run in
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC.parent), os.environ.get("PYTHONPATH")]))}

# Run in a fresh interpreter: force spawn before anything starts a process, decode large folders in parallel
# whatever their size, and record the start method of every pool the cache builder opens.
SPAWNED = """
import json, multiprocessing, runpy, sys
multiprocessing.set_start_method("spawn")
from concurrent.futures import ProcessPoolExecutor
import ddpm.data.cache as datacache

methods = []

class RecordingPool(ProcessPoolExecutor):
    def __init__(self, *args, mp_context=None, **kwargs):
        methods.append(mp_context.get_start_method())
        super().__init__(*args, mp_context=mp_context, **kwargs)

datacache.ProcessPoolExecutor = RecordingPool
datacache.PARALLEL_FROM = 0
try:
{body}
finally:
    sys.stderr.write("START METHODS " + json.dumps(methods) + "\\n")
"""


def run_spawned(body: str, env_cache: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    code = SPAWNED.format(body="\n".join("    " + line for line in body.strip().splitlines()))
    # cwd: `ddpm data inspect` writes its contact sheet into the current folder
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300,
                          cwd=env_cache.parent, env={**ENV, "DDPM_CACHE_DIR": str(env_cache)})
    found = re.search(r"START METHODS (.*)", done.stderr)
    return done, json.loads(found.group(1)) if found else []


def test_folder_decoding_under_spawn_equals_in_process(tmp_path):
    root = animals_tree(tmp_path / "d", bad=True)
    spawned, methods = run_spawned(f"""
from pathlib import Path
from ddpm.data.folder import scan_folder
from ddpm.data.transforms import DecodeSpec
entry = datacache.open_cache(scan_folder(Path({str(root)!r})), DecodeSpec(16, 3), 16, Path({str(tmp_path / "b")!r}),
                             workers=2)
assert entry.built
""", tmp_path / "cache")
    assert spawned.returncode == 0, spawned.stderr[-3000:]
    assert methods == ["spawn"]  # the pool followed the program's start method (it was fork, hard-coded, before)
    index = scan_folder(root)
    serial = datacache.open_cache(index, DecodeSpec(16, 3), 16, tmp_path / "a", workers=1)
    parallel = datacache.open_cache(index, DecodeSpec(16, 3), 16, tmp_path / "b", workers=1)  # the spawned build
    assert not parallel.built and parallel.kept == serial.kept and parallel.skipped == serial.skipped
    assert torch.equal(parallel.images[:], serial.images[:])


def test_python_m_ddpm_under_spawn(tmp_path):
    # `python -m ddpm data inspect` as runpy runs it, so the spawned workers meet ddpm.__main__ as their parent's
    # main module: they must decode, not run the command again
    root = animals_tree(tmp_path / "d", bad=True)
    spawned, methods = run_spawned(f"""
sys.argv = ["ddpm", "data", "inspect", {str(root)!r}, "--json", "--image-size", "16"]
try:
    runpy.run_module("ddpm", run_name="__main__", alter_sys=True)
except SystemExit as e:
    assert e.code == 0, e.code
""", tmp_path / "cache")
    assert spawned.returncode == 0, spawned.stderr[-3000:]
    assert methods == ["spawn"]
    report = json.loads(spawned.stdout)
    assert [(c["name"], c["count"]) for c in report["classes"]] == [("butterfly", 2), ("cat", 3), ("dog", 3)]


def test_the_decoder_is_the_only_multiprocessing_path():
    # a new process pool, DataLoader with workers or multiprocessing use must get a spawn test above
    users = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
             if re.search(r"\bmultiprocessing\b|ProcessPool|DataLoader|num_workers", p.read_text())}
    assert users == {"data/cache.py"}, users

