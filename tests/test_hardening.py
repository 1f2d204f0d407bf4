"""Hostile but careful input (issue 16): every bad value below is one line on stderr, exit code 2, no traceback, and
no file that existed beforehand changes."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ddpm.cli import main

TINY_TRAIN = ["--image-size", "16", "--base-channels", "8", "--channel-mults", "1,2", "--num-res-blocks", "1",
              "--attention-resolutions", "8", "--timesteps", "50", "--steps", "2", "--batch-size", "4", "--quiet",
              "--precision", "fp32"]


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under folder, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def refused_unchanged(argv: list[str], folder: Path, capsys, *needles: str) -> None:
    """main(argv) is a one-line error (exit 2) and changes no file under folder."""
    before = digests(folder)
    try:
        code = main(argv)
    except SystemExit as e:  # a flag refused by the parser
        code = e.code
    assert_one_line_error(code, capsys.readouterr().err, *needles)
    assert digests(folder) == before


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 2-step run written by `ddpm train` (checkpoint and final snapshot)."""
    out = tmp_path_factory.mktemp("hardening") / "run_a"
    assert main(["train", "--out", str(out), *TINY_TRAIN]) == 0
    return out


# --- part 1: a run is never overwritten ------------------------------------------------------------------------------

def test_same_train_command_on_a_finished_run_says_already_finished(trained, capsys):
    before = digests(trained)
    capsys.readouterr()
    assert main(["train", "--out", str(trained), *TINY_TRAIN]) == 0
    captured = capsys.readouterr()
    assert "already finished at step 2" in captured.err and "Traceback" not in captured.err
    assert f"ddpm sample --checkpoint {trained} " in captured.out
    assert digests(trained) == before


@pytest.mark.parametrize("keep_checkpoint", [True, False], ids=["finished-run", "snapshots-only"])
def test_explicit_resume_into_another_run_is_refused(trained, tmp_path, capsys, keep_checkpoint):
    run_b = tmp_path / "run_b"
    shutil.copytree(trained, run_b)
    if not keep_checkpoint:
        (run_b / "checkpoint.safetensors").unlink()
    (snapshot,) = (trained / "snapshots").glob("snapshot-*.safetensors")
    what = "a trained run" if keep_checkpoint else "snapshots of another run"
    refused_unchanged(["train", "--out", str(run_b), "--resume", str(snapshot), *TINY_TRAIN, "--steps", "4"], run_b,
                      capsys, f"already holds {what}")
    refused_unchanged(["train", "--out", str(run_b), "--resume", str(trained), *TINY_TRAIN, "--steps", "4"], run_b,
                      capsys, f"already holds {what}")


@pytest.mark.parametrize("resume", ["auto", "never", "SNAPSHOT"])
def test_train_into_a_folder_with_other_files_is_refused(trained, tmp_path, capsys, resume):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "metrics.jsonl").write_text("{}\n")
    resume = resume.replace("SNAPSHOT", str(next((trained / "snapshots").glob("*.safetensors"))))
    refused_unchanged(["train", "--out", str(folder), "--resume", resume, *TINY_TRAIN], folder, capsys,
                      "not a run", "new or empty --out")


def test_train_into_an_empty_folder_trains(tmp_path):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--out", str(tmp_path / "empty"), *TINY_TRAIN]) == 0
    assert (tmp_path / "empty" / "checkpoint.safetensors").is_file()


# --- part 3: one rule for every output path --------------------------------------------------------------------------

@pytest.fixture
def world(tmp_path) -> Path:
    """tmp_path holding a run (RUN), a file (FILE), a folder with a file (DIR), a one-class data folder (DATA) and an
    image (IMG)."""
    from helpers import untrained_run
    from PIL import Image

    untrained_run(tmp_path / "run")
    (tmp_path / "run" / "snapshots").mkdir()
    (tmp_path / "run" / "tb").mkdir()
    (tmp_path / "file.png").write_bytes(b"mine")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a.txt").write_text("mine\n")
    (tmp_path / "data" / "cat").mkdir(parents=True)
    Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "data" / "cat" / "x.png")
    Image.new("RGB", (40, 40), (10, 200, 10)).save(tmp_path / "img.png")
    (tmp_path / "n_strip.png").write_bytes(b"mine")
    return tmp_path


OUTPUT_CASES = [
    (["sample", "--checkpoint", "RUN", "--out", "RUN/checkpoint.safetensors", "--force"], "which this command reads"),
    (["sample", "--checkpoint", "RUN/checkpoint.safetensors", "--out", "RUN/checkpoint.safetensors", "--force"],
     "which this command reads"),
    (["sample", "--checkpoint", "RUN", "--out", "RUN/config.json", "--force"], "which this command reads"),
    (["sample", "--checkpoint", "RUN", "--out", "RUN/snapshots/grid.png", "--force"], "which this command reads"),
    (["sample", "--checkpoint", "RUN", "--out", "DIR"], "is a folder; give a file name"),
    (["sample", "--checkpoint", "RUN", "--out", "FILE"], "add --force"),
    (["sample", "--checkpoint", "RUN", "--out", "ROOT/new.png", "--images", "FILE"], "is a file; give a folder"),
    (["sample", "--checkpoint", "RUN", "--out", "ROOT/new.png", "--images", "DIR"], "add --force"),
    (["sample", "--checkpoint", "RUN", "--out", "ROOT/new.png", "--images", "RUN/tb", "--force"], "which this command"),
    (["sample", "--checkpoint", "RUN", "--out", "ROOT/new.png", "--trajectory", "ROOT/n.gif", "--prompts-file",
      "ROOT/n_x0.png"], "which this command reads"),
    (["noise", "--out", "DIR"], "is a folder; give a file name"),
    (["noise", "--out", "ROOT/n.gif"], "n_strip.png is an existing file"),
    (["noise", "--image", "IMG", "--out", "IMG", "--force"], "which this command reads"),
    (["eval", "--checkpoint", "RUN", "--out", "FILE"], "is a file; give a folder"),
    (["eval", "--checkpoint", "RUN", "--out", "DIR"], "add --force"),
    (["eval", "--checkpoint", "RUN", "--out", "RUN/snapshots", "--force"], "which this command reads"),
    (["data", "inspect", "DATA", "--sheet", "DIR"], "is a folder; give a file name"),
    (["data", "inspect", "DATA", "--sheet", "FILE"], "add --force"),
    (["data", "inspect", "DATA", "--sheet", "DATA/cat/x.png", "--force"], "which this command reads"),
    (["data", "inspect", "DATA", "--sheet", "DATA/sheet.png"], "which this command reads"),
    (["classifier", "train", "--data", "DATA", "--out", "DIR"], "is a folder; give a file name"),
    (["classifier", "train", "--data", "DATA", "--out", "FILE"], "add --force"),
]


def fill(argv: list[str], root: Path) -> list[str]:
    places = {"RUN": root / "run", "FILE": root / "file.png", "DIR": root / "dir", "DATA": root / "data",
              "IMG": root / "img.png", "ROOT": root}
    out = []
    for arg in argv:
        for key, path in places.items():
            arg = arg.replace(key, str(path)) if arg.startswith(key) else arg
        out.append(arg)
    return out


@pytest.mark.parametrize("argv,needle", OUTPUT_CASES, ids=[" ".join(a) for a, _ in OUTPUT_CASES])
def test_output_path_rule(world, capsys, argv, needle):
    refused_unchanged([*fill(argv, world), "--quiet"], world, capsys, needle)


def test_force_replaces_an_existing_output_and_a_new_file_in_the_run_is_fine(world, capsys):
    grid = world / "run" / "grid.png"
    argv = ["sample", "--checkpoint", str(world / "run"), "cat", "-n", "1", "--steps", "2", "--quiet", "--out", str(grid)]
    assert main(argv) == 0
    first = grid.read_bytes()
    assert main([*argv, "--seed", "1"]) == 2 and grid.read_bytes() == first
    assert "add --force" in capsys.readouterr().err
    assert main([*argv, "--seed", "1", "--force"]) == 0 and grid.read_bytes() != first


# --- part 4: crafted files and out-of-range numbers are one-line errors ----------------------------------------------

METADATA_LINES = [b'{"file_name": 5, "text": "a cat"}', b'{"file_name": null, "text": "a cat"}',
                  b'{"file_name": "x.png", "text": 7}', b'{"file_name": "x.png", "text": null}',
                  b'{"file_name": "x.png", "text": [1]}', b'[1, 2]', b'"x.png"', b'\xff\xfe not utf-8 \x80']


@pytest.mark.parametrize("line", METADATA_LINES, ids=[repr(x)[:30] for x in METADATA_LINES])
@pytest.mark.parametrize("command", ["inspect", "train"])
def test_malformed_metadata_jsonl(world, capsys, line, command):
    (world / "data" / "cat" / "metadata.jsonl").write_bytes(line + b"\n")
    argv = (["data", "inspect", str(world / "data"), "--sheet", str(world / "s.png"), "--cache-dir", str(world / "c")]
            if command == "inspect" else
            ["train", "--data", str(world / "data"), "--out", str(world / "r"), "--cache-dir", str(world / "c"),
             *TINY_TRAIN])
    refused_unchanged([*argv, "--quiet"], world, capsys, "metadata.jsonl")


def _rewrite_checkpoint(path: Path, **metadata: str) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    save_file(load_file(str(path)), str(path), metadata={**meta, **metadata})


CHECKPOINT_METADATA = [{"config": "[1]"}, {"config": '{"model": 5}'}, {"config": '{"format_version": "x"}'},
                       {"config": '{"model": {"image_size": "big"}}'}, {"config": "{not json"}, {"step": "abc"},
                       {"step": "-3"}, {"step": "9" * 5000}]


@pytest.mark.parametrize("metadata", CHECKPOINT_METADATA, ids=[str(m)[:40] for m in CHECKPOINT_METADATA])
def test_crafted_checkpoint_metadata(world, capsys, metadata):
    _rewrite_checkpoint(world / "run" / "checkpoint.safetensors", **metadata)
    refused_unchanged(["sample", "--checkpoint", str(world / "run"), "cat", "--out", str(world / "g.png"), "--quiet"],
                      world, capsys, "checkpoint.safetensors has an unusable")


@pytest.mark.parametrize("meta", ["{not json", "[1]", '{"nope": 1}', '{"num_classes": "x"}'])
def test_crafted_classifier_metadata(tmp_path, meta):
    import torch
    from safetensors.torch import save_file

    from ddpm.common.errors import UserError
    from ddpm.evaluation.classifier import load_classifier

    save_file({"w": torch.zeros(1)}, str(tmp_path / "clf.safetensors"), metadata={"ddpm_classifier": meta})
    with pytest.raises(UserError) as e:
        load_classifier(tmp_path / "clf.safetensors")
    assert "damaged ddpm classifier" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("argv,needle", [
    (["serve", "--checkpoint", "RUN", "--port", "99999"], "1 to 65535"),
    (["serve", "--checkpoint", "RUN", "--port", "0"], "1 to 65535"),
    (["noise", "--timesteps", "1000000000000", "--out", "ROOT/n.gif"], "from 1 to 100,000"),
    (["train", "--timesteps", "100001", "--out", "ROOT/r"], "from 1 to 100,000"),
], ids=["port-huge", "port-0", "noise-timesteps", "train-timesteps"])
def test_numbers_out_of_range(world, capsys, argv, needle):
    refused_unchanged(fill(argv, world), world, capsys, needle)


# --- part 5: silent nonsense is refused ------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,needle", [
    (["--guidance", "-1"], "guidance must be a finite number >= 0"),
    (["--negative", "cat"], "the negative prompt 'cat' names the same class as the prompt 'cat'"),
    (["--negative", "2"], "names the same class"),  # class 2 is cat
    (["--negative", ""], "the negative prompt"),
    (["--negative", "   "], "the negative prompt"),
], ids=["guidance", "negative-same", "negative-same-index", "negative-empty", "negative-blank"])
def test_sample_refuses_nonsense(world, capsys, argv, needle):
    refused_unchanged(["sample", "--checkpoint", str(world / "run"), "cat", "--out", str(world / "g.png"), "--quiet",
                       *argv], world, capsys, needle)


def test_guidance_below_zero_is_refused_by_sampling_config():
    from ddpm.common.errors import UserError
    from ddpm.diffusion.sampling import SamplingConfig

    assert SamplingConfig(guidance=0).guidance == 0.0
    with pytest.raises(UserError, match="guidance must be a finite number >= 0"):
        SamplingConfig(guidance=-0.5)


# --- part 6: class folders whose names are not UTF-8 -----------------------------------------------------------------

NOT_UTF8 = b"chat\xe9"  # Latin-1 "chaté": a name Linux allows that is not UTF-8
SHOWN = "chat\\xe9"  # how ddpm names that class everywhere (common/ostext.as_text): printed, stored, matched
STRICT = {"PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"}  # stdout that refuses anything but UTF-8


def strict_cli(*argv: str | bytes | Path) -> subprocess.CompletedProcess:
    """`python -m ddpm argv` with strict UTF-8 stdout; argv may hold bytes (an argument that is not UTF-8)."""
    return subprocess.run([sys.executable, "-m", "ddpm", *argv], capture_output=True, timeout=300,
                          env={**os.environ, **STRICT})


@pytest.fixture(scope="module")
def latin1(tmp_path_factory) -> Path:
    """ROOT/data/{chat\\xe9 (bytes), dog}/ with 3 images each, and ROOT/run: a 2-step run trained on it by
    `ddpm train` under strict UTF-8 stdout (ROOT/train.out holds what it printed)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("latin1")
    for name, colour in ((os.fsdecode(NOT_UTF8), (200, 30, 30)), ("dog", (30, 200, 30))):
        (root / "data" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (32, 32), (colour[0], colour[1], 40 * i)).save(root / "data" / name / f"{i}.png")
    assert os.path.isdir(os.fsencode(root / "data") + b"/" + NOT_UTF8)
    done = strict_cli("train", "--data", root / "data", "--out", root / "run", "--cache-dir", root / "cache",
                      *TINY_TRAIN)
    assert done.returncode == 0, done.stderr.decode()
    (root / "train.out").write_bytes(done.stdout)
    return root


def test_a_class_folder_that_is_not_utf8_trains_and_prints_a_command_that_samples_it(latin1, capsys):
    import shlex

    from ddpm.pictures.pngmeta import read_png_metadata
    from ddpm.training.checkpoint import load_checkpoint

    config, *_ = load_checkpoint(latin1 / "run")
    assert config.data.class_names == [SHOWN, "dog"]
    last = (latin1 / "train.out").read_bytes().decode("utf-8").splitlines()[-1]
    assert last == f"sample from it: ddpm sample --checkpoint {latin1 / 'run'} 'chat\\xe9' -n 8"
    argv = shlex.split(last.split(": ", 1)[1])[1:]  # the command as a shell passes it
    capsys.readouterr()
    assert main([*argv, "-n", "1", "--steps", "2", "--quiet", "--out", str(latin1 / "suggested.png")]) == 0
    assert f"-> {SHOWN} (similarity 1.00)" in capsys.readouterr().out  # capsys's stdout is strict UTF-8 too
    assert read_png_metadata(latin1 / "suggested.png")["drawn"] == [SHOWN]


def test_sampling_with_the_raw_bytes_as_prompt_and_path_writes_readable_png_metadata(latin1, tmp_path):
    from ddpm.pictures.pngmeta import read_png_metadata

    grid = os.fsencode(tmp_path) + b"/grid-\xff.png"  # an output path that is not UTF-8 either
    done = strict_cli("sample", "--checkpoint", latin1 / "run", NOT_UTF8, b"CHAT\xe9", "-n", "1", "--steps", "2",
                      "--quiet", "--out", grid)
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode("utf-8")
    assert out.count(f"-> {SHOWN} (similarity 1.00)") == 2 and out.endswith("grid-\\xff.png\n")
    meta = read_png_metadata(os.fsdecode(grid))
    assert meta["prompts"] == [SHOWN, "CHAT\\xe9"] and meta["drawn"] == [SHOWN, SHOWN]
    assert main(["sample", "--checkpoint", str(latin1 / "run"), "-n", "1", "--steps", "2", "--quiet", "--out",
                 str(tmp_path / "every.png")]) == 0  # no prompt: one row per class, the names as stored
    assert read_png_metadata(tmp_path / "every.png")["drawn"] == [SHOWN, "dog"]


def test_data_inspect_of_a_folder_that_is_not_utf8(latin1, tmp_path, capsys):
    import json

    bad = os.fsencode(latin1 / "data") + b"/dog/broken-\xff.png"  # a skipped file whose name is not UTF-8
    with open(bad, "wb") as f:
        f.write(b"not a picture")
    try:
        text = strict_cli("data", "inspect", latin1 / "data", "--sheet", tmp_path / "s.png", "--cache-dir",
                          tmp_path / "c", "--quiet")
        assert main(["data", "inspect", str(latin1 / "data"), "--json", "--sheet", str(tmp_path / "s2.png"),
                     "--cache-dir", str(tmp_path / "c")]) == 0
    finally:
        os.unlink(bad)
    assert text.returncode == 0, text.stderr.decode()
    assert f"  {SHOWN} " in text.stdout.decode("utf-8") and "broken-\\xff.png: not an image" in text.stdout.decode()
    r = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in r["classes"]] == [SHOWN, "dog"] and r["skipped"][0]["path"].endswith("broken-\\xff.png")


def test_as_text_makes_any_os_string_text_and_leaves_text_alone():
    from ddpm.common.ostext import as_text

    assert as_text(os.fsdecode(NOT_UTF8)) == SHOWN and as_text(SHOWN) == SHOWN
    assert as_text("zèbre ζ 象") == "zèbre ζ 象"
    assert as_text("two\nlines\x1b[2J") == "two\\x0alines\\x1b[2J"  # one line, no terminal control
    for odd in ("\ud800", "a\udcffb\ud800", os.fsdecode(b"\xff\xfe")):
        assert as_text(odd).encode("utf-8") and as_text(as_text(odd)) == as_text(odd)


# --- part 7: an image that declares enormous dimensions is skipped unread --------------------------------------------

def test_a_header_declaring_9400x9400_is_skipped_before_decoding(tmp_path, monkeypatch):
    import ddpm.data.cache as cache
    from data_trees import header_only_png

    from ddpm.data.transforms import DecodeSpec

    header_only_png(tmp_path / "big.png", 9400, 9400)
    monkeypatch.setattr(cache, "decode_image", lambda *_: pytest.fail("decoded a file over the pixel limit"))
    arr, reason, *_ = cache.decode_file(tmp_path / "big.png", DecodeSpec(16, 3), 16)
    assert arr is None and reason == "decompression bomb (9400x9400 pixels; at most 67,108,864 are read)"


def test_the_pixel_limit_is_one_number_read_from_the_header(tmp_path, monkeypatch):
    import ddpm.data.transforms as transforms
    from data_trees import header_only_png

    monkeypatch.setattr(transforms, "MAX_PIXELS", 110)
    header_only_png(tmp_path / "at.png", 10, 11)
    header_only_png(tmp_path / "over.png", 11, 11)
    with transforms.open_image(tmp_path / "at.png") as im:
        assert im.size == (10, 11)
    with pytest.raises(transforms.ImageTooLarge, match=r"11x11 pixels; at most 110"):
        with transforms.open_image(tmp_path / "over.png"):
            pass


def test_inspect_train_and_noise_skip_or_refuse_a_9400x9400_header(world, capsys):
    from data_trees import header_only_png

    header_only_png(world / "data" / "cat" / "big.png", 9400, 9400)
    argv = ["data", "inspect", str(world / "data"), "--sheet", str(world / "s.png"), "--cache-dir", str(world / "c"),
            "--quiet"]
    assert main(argv) == 0
    assert f"{world / 'data' / 'cat' / 'big.png'}: decompression bomb (9400x9400 pixels" in capsys.readouterr().out
    with pytest.warns(UserWarning) as caught:  # the CLI prints each as one line: ddpm: warning: ...
        assert main(["train", "--data", str(world / "data"), "--out", str(world / "r"), "--cache-dir",
                     str(world / "c"), *TINY_TRAIN]) == 0
    assert [str(w.message) for w in caught if "big.png" in str(w.message)] == [
        f"skipping {world / 'data' / 'cat' / 'big.png'}: decompression bomb (9400x9400 pixels; at most 67,108,864 are "
        "read)"]
    refused_unchanged(["noise", "--image", str(world / "data" / "cat" / "big.png"), "--out", str(world / "m.gif")],
                      world, capsys, "cannot read image", "decompression bomb (9400x9400")
