"""A robustness corpus (issue 16): every subcommand over bad values of each of its numeric and path options, crafted
metadata.jsonl lines and crafted checkpoint, snapshot and classifier metadata. Each case must be a user error:
exit code 2, exactly one line on stderr (no traceback), and no file that existed beforehand changed.

The CLI runs in-process (`ddpm.cli.main`), over a copy of one small tree per test. The expensive part of each
command (the training loop, sampling, the web server, the classifier's training, the noising animation) is replaced
by a tripwire: a bad value must be refused before it, so a case that reaches it fails with "accepted" (and none runs
for minutes or starts a server)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from ddpm.cli import main

NOT_UTF8 = os.fsdecode(b"\xff\xfe")  # what Python makes of argv bytes that are not UTF-8 (surrogate escapes)
HUGE = "1" + "0" * 30  # 10**30
INT64_OVERFLOW = str(2**63)  # 19 digits, one more than int64 holds
MIB_HUGE = "1" + "0" * 18  # 10**18: an int64, far beyond any count of images or pixels

# bad text for a whole-number option; "0" and "-1" are added where they are out of range
NOT_WHOLE = [HUGE, INT64_OVERFLOW, "1.5", "nan", "inf", "²", "３", "", NOT_UTF8]
# bad text for a real-number option; "0", "-1" and "HUGE" are added where they are out of range
NOT_REAL = ["nan", "inf", "-inf", "1e999", "²", "１.５", "", NOT_UTF8]


class Accepted(Exception):
    """A bad value got past every check into the expensive part of a command."""


@pytest.fixture(autouse=True)
def tripwires(monkeypatch, tmp_path):
    import ddpm.api
    import ddpm.evaluation.classifier
    import ddpm.launch
    import ddpm.pictures.noising
    import ddpm.serve

    def accepted(what):
        def trip(*args, **kwargs):
            raise Accepted(f"a bad value reached {what}")
        return trip

    monkeypatch.setattr(ddpm.launch, "train", accepted("the training loop"))
    monkeypatch.setattr(ddpm.api.TrainedModel, "sample_pairs", accepted("sampling"))
    monkeypatch.setattr(ddpm.serve, "serve", accepted("the web server"))
    monkeypatch.setattr(ddpm.evaluation.classifier, "train_classifier", accepted("the classifier's training"))
    monkeypatch.setattr(ddpm.pictures.noising, "save_noising", accepted("the noising animation"))
    monkeypatch.setenv("DDPM_CACHE_DIR", str(tmp_path / "default-cache"))


# --- the tree every case runs over -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """RUN (an untrained run of classes bear, bird, with a snapshot), DATA (bear/, bird/ with two images each),
    FILE (a text file), DIR (a folder with a file), EMPTY (an empty folder), IMG (an image), SNAP (RUN's snapshot)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("robustness")
    _snapshot_of(_smallest_run(root / "run"))
    for name, colour in (("bear", (150, 90, 40)), ("bird", (40, 90, 200))):
        (root / "data" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (20, 20), (colour[0], colour[1], 60 * i)).save(root / "data" / name / f"{i}.png")
    (root / "file.txt").write_text("mine\n")
    (root / "dir").mkdir()
    (root / "dir" / "a.txt").write_text("mine\n")
    (root / "empty").mkdir()
    Image.new("RGB", (40, 40), (10, 200, 10)).save(root / "img.png")
    return root


def _smallest_run(out: Path) -> Path:
    """A run of the smallest network there is (8 px grey, 4 channels, one level: a few kB, loaded in milliseconds):
    a tree copied for every case must be cheap to copy and to hash."""
    import copy

    from helpers import tiny_config

    from ddpm.config import ModelConfig
    from ddpm.network.unet import UNet
    from ddpm.training.checkpoint import CHECKPOINT_NAME, save_checkpoint

    config = tiny_config()
    config.model = ModelConfig(image_size=8, channels=1, base_channels=4, channel_mults=(1,), num_res_blocks=1,
                               attention_resolutions=(), num_heads=1, num_classes=2)
    config.data.class_names = ["bear", "bird"]
    out.mkdir(parents=True)
    config.save(out / "config.json")
    model = UNet(config.model)
    save_checkpoint(out / CHECKPOINT_NAME, config, model, copy.deepcopy(model), 0)
    return out


def _snapshot_of(run: Path) -> Path:
    """A snapshot of the run's weights at step 1 (what training writes, without training)."""
    from ddpm.training.checkpoint import load_checkpoint
    from ddpm.training.snapshot import Snapshot, save_snapshot

    config, weights, ema, _ = load_checkpoint(run)
    tensors = {**{f"model.{k}": v for k, v in weights.items()}, **{f"ema.{k}": v for k, v in ema.items()}}
    state = {"samples_seen": 4, "world_size": 1, "global_batch": 4, "rng": []}
    return save_snapshot(run, Snapshot(config, 1, tensors, state), keep=3)


@pytest.fixture
def world(template, tmp_path) -> Path:
    shutil.copytree(template, tmp_path / "w", symlinks=True)
    return tmp_path / "w"


PLACES = {"RUN": "run", "DATA": "data", "FILE": "file.txt", "DIR": "dir", "EMPTY": "empty", "IMG": "img.png",
          "SNAP": "run/snapshots/snapshot-00000001.safetensors", "W": "."}


def fill(argv: list[str], root: Path) -> list[str]:
    """Placeholders (RUN, DATA, ... and W for the tree's root) at the start of an argument -> paths under root."""
    out = []
    for arg in argv:
        for key in sorted(PLACES, key=len, reverse=True):
            if arg == key or arg.startswith(key + "/"):
                arg = str((root / PLACES[key] / arg[len(key) + 1:]) if arg != key else root / PLACES[key])
                break
        out.append(arg)
    return out


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def refused(argv: list[str], world: Path, capsys) -> str:
    """Run `ddpm argv` over world; assert exit code 2, one line on stderr and no existing file changed. The line."""
    before = digests(world)
    capsys.readouterr()
    try:
        code = main(fill(argv, world))
    except SystemExit as e:  # refused by the parser
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, f"exit code {code}: {err}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    after = digests(world)
    assert {k: v for k, v in after.items() if k in before} == before, "an existing file changed"
    return lines[0]


# --- the cases -------------------------------------------------------------------------------------------------------

TINY = ["--image-size", "16", "--base-channels", "8", "--channel-mults", "1,2", "--num-res-blocks", "1",
        "--attention-resolutions", "8", "--timesteps", "50", "--steps", "2", "--batch-size", "4", "--quiet",
        "--precision", "fp32"]
COMMANDS = {  # a command that would run (up to its tripwire) with every option valid
    "train": ["train", "--out", "W/new", "--data", "DATA", "--cache-dir", "W/cache", *TINY],
    "sample": ["sample", "--checkpoint", "RUN", "--out", "W/g.png", "--quiet"],
    "serve": ["serve", "--checkpoint", "RUN"],
    "edit": ["edit", "--checkpoint", "RUN", "--image", "IMG", "bear", "--out", "W/e.png", "--quiet"],
    "inpaint": ["inpaint", "--checkpoint", "RUN", "--image", "IMG", "--box", "0,0,20,20", "--out", "W/i.png", "--quiet"],
    "interpolate": ["interpolate", "--checkpoint", "RUN", "--from", "bear", "--to", "bird", "--out", "W/m.gif",
                    "--quiet"],
    "noise": ["noise", "--out", "W/n.gif", "--image", "IMG", "--quiet"],
    "inspect": ["data", "inspect", "DATA", "--sheet", "W/s.png", "--cache-dir", "W/cache", "--quiet"],
    "demo": ["demo", "--out", "W/demo", "--quiet"],
    "eval": ["eval", "--checkpoint", "RUN", "--data", "DATA", "--out", "W/e", "--no-inception", "--quiet"],
    "classifier": ["classifier", "train", "--data", "DATA", "--out", "W/c.safetensors", "--cache-dir", "W/cache",
                   "--quiet"],
}

# (command, option, kind): kind is "whole>0", "whole>=0", "real>0", "real>=0" or "real01" (a probability-like
# number that cannot be huge); whole numbers also get 10**18 where it would size an allocation ("whole>0 size")
NUMERIC = [
    *[("train", o, "whole>0") for o in ("--image-size", "--base-channels", "--num-res-blocks", "--num-heads",
                                         "--timesteps", "--steps", "--batch-size", "--grad-accum", "--log-every",
                                         "--keep-snapshots", "--min-size")],
    *[("train", o, "whole>=0") for o in ("--warmup", "--threads", "--seed", "--sample-every", "--save-every",
                                          "--snapshot-every")],
    *[("train", o, "real>0") for o in ("--lr", "--min-snr-gamma")],
    *[("train", o, "real>=0") for o in ("--weight-decay", "--grad-clip")],
    *[("train", o, "real01") for o in ("--dropout", "--cond-drop", "--ema-decay", "--ema-rel-std")],
    *[(c, o, "whole>0") for c in ("sample", "eval") for o in ("--steps", "--batch-size")],
    *[(c, "--seed", "whole>=0") for c in ("sample", "eval", "noise", "classifier")],
    *[(c, "--guidance", "real>=0") for c in ("sample", "eval")],
    *[(c, "--eta", "real01") for c in ("sample", "eval")],
    ("sample", "-n", "whole>0 size"), ("sample", "--scale", "whole>0 size"),
    *[(c, o, "whole>0 size") for c in ("edit", "inpaint") for o in ("-n", "--scale")],
    *[(c, o, "whole>0") for c in ("edit", "inpaint", "interpolate") for o in ("--steps", "--batch-size")],
    *[(c, o, "whole>=0") for c in ("edit", "inpaint") for o in ("--seed",)],
    ("edit", "--strength", "real01"), ("inpaint", "--jump", "whole>0"), ("inpaint", "--repeats", "whole>0 size"),
    ("interpolate", "--frames", "whole>0 size"), ("interpolate", "--scale", "whole>0 size"),
    *[("interpolate", o, "whole>=0") for o in ("--seed", "--seed-a", "--seed-b")],
    ("serve", "--port", "whole>0"), ("serve", "--max-queue", "whole>0"),
    ("noise", "--timesteps", "whole>0"), ("noise", "--image-size", "whole>0 size"), ("noise", "--frames", "whole>0 size"),
    ("inspect", "--per-class", "whole>0 size"), ("inspect", "--image-size", "whole>0 size"),
    ("inspect", "--min-size", "whole>0"),
    ("demo", "--steps", "whole>0"),
    ("eval", "--num-samples", "whole>0 size"),
    ("classifier", "--image-size", "whole>0 size"), ("classifier", "--epochs", "whole>0"),
]


def bad_values(kind: str) -> list[str]:
    if kind.startswith("whole"):
        return (NOT_WHOLE + ["-1"] + (["0"] if kind.startswith("whole>0") else [])
                + ([MIB_HUGE] if kind.endswith("size") else []))
    return NOT_REAL + ["-1"] + (["0"] if kind == "real>0" else []) + (["2", HUGE] if kind == "real01" else [])


NUMERIC_CASES = [(c, o, v) for c, o, kind in NUMERIC for v in bad_values(kind)]


@pytest.mark.parametrize("command,option,value", NUMERIC_CASES,
                         ids=[f"{c} {o} {v[:8]!r}" for c, o, v in NUMERIC_CASES])
def test_bad_number(world, capsys, command, option, value):
    refused([*COMMANDS[command], option, value], world, capsys)


# (command, option, value): a file where a folder is expected, a folder where a file is expected, nothing there, a
# name that is not UTF-8, an empty name, an output under a file
PATH_CASES = [
    ("train", "--out", "FILE"), ("train", "--out", "FILE/run"), ("train", "--out", ""),
    ("train", "--config", "DIR"), ("train", "--config", "W/missing.toml"), ("train", "--config", "FILE"),
    ("train", "--config", "IMG"), ("train", "--config", f"W/{NOT_UTF8}.json"), ("train", "--config", ""),
    ("train", "--resume", "DIR"), ("train", "--resume", "FILE"), ("train", "--resume", "W/missing.safetensors"),
    ("train", "--resume", "RUN/checkpoint.safetensors"), ("train", "--resume", ""),
    ("train", "--cache-dir", "FILE"), ("train", "--cache-dir", "FILE/sub"),
    ("train", "--data", "FILE"), ("train", "--data", "W/missing"), ("train", "--data", "EMPTY"),
    ("train", "--data", f"W/{NOT_UTF8}"), ("train", "--data", ""),
    ("sample", "--checkpoint", "DIR"), ("sample", "--checkpoint", "EMPTY"), ("sample", "--checkpoint", "FILE"),
    ("sample", "--checkpoint", "IMG"), ("sample", "--checkpoint", "W/missing"), ("sample", "--checkpoint", ""),
    ("sample", "--checkpoint", f"W/{NOT_UTF8}"), ("sample", "--checkpoint", "SNAP"),
    ("sample", "--prompts-file", "DIR"), ("sample", "--prompts-file", "W/missing.txt"),
    ("sample", "--prompts-file", "IMG"), ("sample", "--prompts-file", "EMPTY"), ("sample", "--prompts-file", ""),
    ("sample", "--out", "FILE/g.png"), ("sample", "--out", ""), ("sample", "--out", "RUN"),
    ("sample", "--images", "FILE/sub"), ("sample", "--trajectory", "FILE/t.gif"), ("sample", "--trajectory", "DIR"),
    ("serve", "--checkpoint", "DIR"), ("serve", "--checkpoint", "FILE"), ("serve", "--checkpoint", "W/missing"),
    ("serve", "--checkpoint", f"W/{NOT_UTF8}"), ("serve", "--checkpoint", ""),
    ("noise", "--image", "DIR"), ("noise", "--image", "FILE"), ("noise", "--image", "W/missing.png"),
    ("noise", "--image", f"W/{NOT_UTF8}.png"), ("noise", "--image", ""),
    ("noise", "--out", "DIR"), ("noise", "--out", "FILE/n.gif"), ("noise", "--out", ""),
    ("inspect", "--sheet", "FILE/s.png"), ("inspect", "--sheet", ""), ("inspect", "--cache-dir", "FILE"),
    ("demo", "--out", "FILE"), ("demo", "--out", "FILE/demo"), ("demo", "--out", ""),
    ("eval", "--checkpoint", "DIR"), ("eval", "--checkpoint", "FILE"), ("eval", "--checkpoint", "W/missing"),
    ("eval", "--checkpoint", ""), ("eval", "--classifier", "DIR"), ("eval", "--classifier", "FILE"),
    ("eval", "--classifier", "W/missing.safetensors"), ("eval", "--classifier", "RUN/checkpoint.safetensors"),
    ("eval", "--classifier", f"W/{NOT_UTF8}"), ("eval", "--inception-weights", "DIR"),
    ("eval", "--inception-weights", "FILE"), ("eval", "--inception-weights", "W/missing.pt"),
    ("eval", "--cache-dir", "FILE"), ("eval", "--data", "FILE"), ("eval", "--data", "W/missing"),
    ("eval", "--data", "EMPTY"), ("eval", "--data", f"W/{NOT_UTF8}"), ("eval", "--out", "FILE/e"),
    ("classifier", "--data", "FILE"), ("classifier", "--data", "W/missing"), ("classifier", "--data", "EMPTY"),
    ("classifier", "--data", f"W/{NOT_UTF8}"), ("classifier", "--data", ""), ("classifier", "--out", "FILE/c.safetensors"),
    ("classifier", "--out", ""), ("classifier", "--cache-dir", "FILE"),
    *[(c, "--image", v) for c in ("edit", "inpaint") for v in ("DIR", "FILE", "W/missing.png", f"W/{NOT_UTF8}.png", "")],
    *[(c, "--out", v) for c in ("edit", "inpaint") for v in ("FILE/g.png", "", "RUN", "IMG")],
    *[("inpaint", "--mask", v) for v in ("DIR", "FILE", "W/missing.png", "")],
    ("interpolate", "--out", "FILE/m.gif"), ("interpolate", "--out", ""), ("interpolate", "--out", "W/m.png"),
    ("edit", "--checkpoint", "FILE"), ("inpaint", "--checkpoint", "W/missing"), ("interpolate", "--checkpoint", "DIR"),
]


@pytest.mark.parametrize("command,option,value", PATH_CASES, ids=[f"{c} {o} {v!r}" for c, o, v in PATH_CASES])
def test_bad_path(world, capsys, command, option, value):
    refused([*COMMANDS[command], option, value], world, capsys)


def test_bad_positional_paths_of_data_inspect(world, capsys):
    for path in ("FILE", "IMG", "W/missing", "EMPTY", f"W/{NOT_UTF8}", ""):
        refused(["data", "inspect", path, "--sheet", "W/s.png", "--cache-dir", "W/cache", "--quiet"], world, capsys)


OTHER_CASES = [  # bad text for options that are neither numbers nor paths
    ["train", "--background", "#12345g"], ["train", "--background", ""], ["train", "--channels", "2"],
    ["train", "--channel-mults", "0,1"], ["train", "--channel-mults", ","], ["train", "--channel-mults", "1,²"],
    ["train", "--channel-mults", f"1,{HUGE}"], ["train", "--attention-resolutions", "-8"],
    ["train", "--device", "cuda:99"], ["train", "--device", "tpu"],
    ["sample", "--sampler", "euler"], ["sample", "--variance", "big"], ["sample", "--device", "tpu"],
    ["sample", "--trajectory", "W/t.png"], ["sample", "nope-not-a-class", "--strict"], ["sample", "7"],
    ["sample", "-1"], ["sample", "--negative", ""], ["sample", "x" * 20_000],
    ["serve", "--device", "tpu"], ["noise", "--schedules", ""], ["noise", "--schedules", "linear,zigzag"],
    ["noise", "--timesteps", "1"], ["inspect", "--channels", "2"], ["eval", "--num-samples", "1"],
    ["eval", "--steps", "101"], ["eval", "--split", "validation", "--data", "builtin:animal-shapes"],
    ["eval", "--data", "builtin:nope"], ["classifier", "--channels", "2"], ["classifier", "--data", "builtin:nope"],
    ["edit", "nope-not-a-class", "--strict"], ["edit", "--negative", "bear"], ["edit", "--sampler", "euler"],
    ["inpaint", "--box", "0,0,41,10"], ["inpaint", "--box", "5,5,5,9"], ["inpaint", "--box", "1,2,3"],
    ["inpaint", "--box", "a,b,c,d"], ["inpaint", "--box", "0,0,40,40"], ["inpaint", "--mask", "IMG"],
    ["interpolate", "--to", "bear"], ["interpolate", "--sampler", "ddpm"], ["interpolate", "--eta", "0.5"],
    ["interpolate", "--to", "nope-not-a-class", "--strict"],
]


@pytest.mark.parametrize("extra", OTHER_CASES, ids=[" ".join(e)[:40] for e in OTHER_CASES])
def test_bad_text(world, capsys, extra):
    command, *rest = extra
    refused([*COMMANDS[command], *rest], world, capsys)


# --- crafted files ---------------------------------------------------------------------------------------------------

METADATA_LINES = [
    b'{"file_name": "0.png", "text": "a"', b"{}", b'{"text": "a bear"}', b'{"file_name": "", "text": "a"}',
    b'{"file_name": "0.png", "text": [["nested"]]}', b'{"file_name": "0.png", "text": NaN}',
    b'{"file_name": "0.png", "text": {"a": 1}}', b"[" * 100_000 + b"]" * 100_000, b'{"file_name": ' + b"[" * 50_000,
    b'{"file_name": "\\ud800.png", "text": "a"}', b'{"file_name": "a\\u0000b.png", "text": "a"}',
    b'{"file_name": "0.png", "text": "caf\xe9"}', b"\x00\x00\x00", b"null", b"1e999",
]


@pytest.mark.parametrize("line", METADATA_LINES, ids=[repr(x[:24]) for x in METADATA_LINES])
@pytest.mark.parametrize("command", ["inspect", "train"])
def test_malformed_metadata_jsonl(world, capsys, line, command):
    (world / "data" / "bear" / "metadata.jsonl").write_bytes(b'{"file_name": "1.png", "text": "ok"}\n' + line + b"\n")
    assert "metadata.jsonl" in refused(COMMANDS[command], world, capsys)


def _rewrite_metadata(path: Path, **changes: str | None) -> None:
    """Rewrite a safetensors file with its metadata changed (a key set to None is removed)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    meta = {k: v for k, v in {**meta, **changes}.items() if v is not None}
    save_file(load_file(str(path)), str(path), metadata=meta)


def _config_with(**sections) -> str:
    from helpers import tiny_config

    d = tiny_config().to_dict()
    for section, values in sections.items():
        d[section].update(values)
    return json.dumps(d)


DEEP = "[" * 100_000 + "]" * 100_000
CONFIGS = [None, "", DEEP, '{"model": {"image_size": 1e400}}', "NaN", '"text"',
           _config_with(model={"image_size": 10**30}), _config_with(model={"base_channels": 10**18}),
           _config_with(model={"num_res_blocks": 10**12}), _config_with(model={"num_classes": 10**15}),
           _config_with(model={"channel_mults": [1, 10**15]}), _config_with(model={"num_heads": 0}),
           _config_with(model={"image_size": 16, "channel_mults": [1] * 40}),
           _config_with(diffusion={"num_steps": 10**9}), _config_with(train={"lr": "fast"}),
           _config_with(data={"class_names": "bear"}), _config_with(data={"class_names": [1, 2]})]
STEPS = ["", "1.5", "٣", "-1", HUGE, "0x10", INT64_OVERFLOW]


@pytest.mark.parametrize("config", CONFIGS, ids=[repr(c)[:40] for c in CONFIGS])
def test_crafted_checkpoint_config(world, capsys, config):
    _rewrite_metadata(world / "run" / "checkpoint.safetensors", config=config)
    assert "checkpoint" in refused(COMMANDS["sample"], world, capsys)


@pytest.mark.parametrize("step", STEPS, ids=repr)
def test_crafted_checkpoint_step(world, capsys, step):
    _rewrite_metadata(world / "run" / "checkpoint.safetensors", step=step)
    assert "checkpoint.safetensors" in refused(COMMANDS["sample"], world, capsys)


def test_checkpoint_metadata_of_another_format(world, capsys):
    for fmt in (None, "", "ddpm-snapshot", "DDPM"):
        _rewrite_metadata(world / "run" / "checkpoint.safetensors", format=fmt)
        assert "not a ddpm checkpoint" in refused(COMMANDS["sample"], world, capsys)


SNAPSHOT_CHANGES = [{"config": c} for c in CONFIGS[:7]] + [{"step": s} for s in STEPS] + [
    {"format_version": "x"}, {"format_version": HUGE}, {"format_version": None}, {"state": None}, {"state": DEEP},
    {"state": "[1]"}, {"state": "{"}, {"state": "{}"}, {"state": '{"samples_seen": -1, "world_size": 1, "global_batch": 4, '
                                                           '"rng": []}'}, {"format": "ddpm"}]


@pytest.mark.parametrize("changes", SNAPSHOT_CHANGES, ids=[repr(c)[:40] for c in SNAPSHOT_CHANGES])
def test_crafted_snapshot_metadata(world, capsys, changes):
    """`--resume SNAPSHOT` of a crafted snapshot (its checksum covers the tensors, not the metadata)."""
    snap = world / "run" / "snapshots" / "snapshot-00000001.safetensors"
    _rewrite_metadata(snap, **changes)
    assert "snapshot" in refused([*COMMANDS["train"], "--resume", str(snap)], world, capsys)


def _classifier_meta(**changes) -> str:
    return json.dumps({**{"image_size": 16, "channels": 1, "class_names": ["bear", "bird"], "width": 8}, **changes})


CLASSIFIER_META = ["", DEEP, "null", "[1]", '{"image_size": 16}', _classifier_meta(image_size=10**15),
                   _classifier_meta(width=10**6), _classifier_meta(class_names="ab"), _classifier_meta(class_names=[]),
                   _classifier_meta(image_size=-16), _classifier_meta(channels=2), _classifier_meta(unknown=1),
                   _classifier_meta()]  # the last is valid, but its weights are not those of its config


@pytest.mark.parametrize("meta", CLASSIFIER_META, ids=[repr(m)[:40] for m in CLASSIFIER_META])
def test_crafted_classifier_metadata(world, capsys, meta):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(world / "clf.safetensors"), metadata={"ddpm_classifier": meta})
    assert "clf.safetensors" in refused([*COMMANDS["eval"], "--classifier", "W/clf.safetensors"], world, capsys)


def test_a_valid_command_reaches_its_tripwire(world, capsys):
    """The tree and the tripwires are right: with good values each command gets to its expensive part."""
    for command, argv in COMMANDS.items():
        if command == "inspect":
            assert main(fill(argv, world)) == 0
            continue
        with pytest.raises(Accepted):
            main(fill(argv, world))
