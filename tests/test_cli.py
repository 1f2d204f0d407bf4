"""Every subcommand's smoke run and its bad-input errors: one line, exit code 2, no traceback."""

import subprocess
import sys

import pytest
from helpers import tiny_config
from PIL import Image

from ddpm.cli import main
from ddpm.launch import train_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    train_run(tiny_config(steps=3), out, progress=False)
    return out


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ddpm", *args], capture_output=True, text=True, timeout=300)


def assert_user_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0]


def test_help_shows_defaults(capsys):
    for command in ("train", "sample", "noise", "demo"):
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
    out = capsys.readouterr().out
    assert "(default: cosine)" in out and "(default: the preset's)" in out
    flat = " ".join(out.split())  # argparse wraps the help text
    assert "stronger (default: 3 for a class model, 7 for a text model) --eta" in flat  # said once, no "None"
    assert "sampler (slow) --guidance" in flat


def test_train_smoke(tmp_path, capsys):
    out = tmp_path / "r"
    code = main(["train", "--out", str(out), "--image-size", "16", "--base-channels", "8", "--channel-mults", "1,2",
                 "--num-res-blocks", "1", "--attention-resolutions", "8", "--timesteps", "50", "--steps", "2",
                 "--batch-size", "4", "--quiet", "--precision", "fp32"])
    assert code == 0
    assert (out / "checkpoint.safetensors").is_file() and (out / "config.json").is_file()
    assert str(out) in capsys.readouterr().out


def test_train_grad_checkpointing_and_prediction_flags_are_recorded(tmp_path):
    import json

    out = tmp_path / "ck"
    code = main(["train", "--out", str(out), "--image-size", "16", "--base-channels", "8", "--channel-mults", "1,2",
                 "--num-res-blocks", "1", "--attention-resolutions", "8", "--timesteps", "50", "--steps", "1",
                 "--batch-size", "2", "--quiet", "--precision", "fp32", "--grad-checkpointing", "--prediction", "v"])
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["checkpointing"] is True and config["diffusion"]["prediction"] == "v"


def test_sample_smoke_with_names_and_indices(run_dir, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code = main(["sample", "--checkpoint", str(run_dir), "zebra", "0", "-n", "3", "--steps", "4", "--out", str(out),
                 "--quiet", "--scale", "1"])
    assert code == 0
    with Image.open(out) as im:
        assert im.height == 2 * 16 + 3 * 2  # two rows of 16 px images with 2 px padding
    assert str(out) in capsys.readouterr().out


def test_sample_ddpm_sampler(run_dir, tmp_path):
    assert main(["sample", "--checkpoint", str(run_dir), "cat", "-n", "1", "--sampler", "ddpm", "--out",
                 str(tmp_path / "g.png"), "--quiet"]) == 0


@pytest.mark.parametrize("sampler,steps", [("dpm++2m", 20), ("dpm++2m-sde", 20), ("ddim", 50), ("ddpm", 50)])
def test_sample_default_steps_per_sampler(run_dir, tmp_path, monkeypatch, sampler, steps):
    import ddpm.diffusion.sampler

    seen = []
    original = ddpm.diffusion.sampler.timestep_pairs
    monkeypatch.setattr(ddpm.diffusion.sampler, "timestep_pairs", lambda T, n: seen.append(n) or original(T, n))
    assert main(["sample", "--checkpoint", str(run_dir), "cat", "-n", "1", "--sampler", sampler, "--out",
                 str(tmp_path / "g.png"), "--quiet"]) == 0
    assert seen == [steps]


def test_noise_smoke(tmp_path, capsys):
    out = tmp_path / "noising.gif"
    assert main(["noise", "--out", str(out), "--frames", "4", "--image-size", "32"]) == 0
    assert out.is_file() and (tmp_path / "noising_strip.png").is_file() and (tmp_path / "noising_alpha_bar.png").is_file()
    user_image = tmp_path / "me.png"
    Image.new("RGB", (50, 40), (200, 10, 10)).save(user_image)
    assert main(["noise", "--image", str(user_image), "--out", str(tmp_path / "b.gif"), "--frames", "3"]) == 0


def test_far_prompt_with_strict_names_the_nearest_classes(run_dir, tmp_path, capsys):
    code = main(["sample", "--checkpoint", str(run_dir), "quantum chromodynamics", "--strict", "--out",
                 str(tmp_path / "x.png"), "--quiet"])
    assert_user_error(code, capsys.readouterr().err, "'quantum chromodynamics' is far", "nearest:", "--strict")
    code = main(["sample", "--checkpoint", str(run_dir), "42", "--out", str(tmp_path / "x.png"), "--quiet"])
    assert_user_error(code, capsys.readouterr().err, "class index 42 is out of range", "zebra", "bear")


@pytest.mark.parametrize("argv,needle", [
    (["sample", "--checkpoint", "/nonexistent/run", "cat"], "no checkpoint at"),
    (["train", "--data", "/nonexistent/data", "--out", "OUT"], "does not exist"),
    (["train", "--image-size", "30", "--channel-mults", "1,2,2", "--out", "OUT"], "multiple of 4"),
    (["train", "--out", "OUT", "--steps", "0"], "--steps must be a whole number >= 1, got 0"),
    (["train", "--out", "OUT", "--cond-drop", "1.5"], "--cond-drop must be a number in [0, 1], got 1.5"),
    (["noise", "--schedules", "linear,quadratic", "--out", "OUT/n.gif"], "unknown schedule"),
    (["noise", "--image", "/nonexistent.png", "--out", "OUT/n.gif"], "does not exist"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, tmp_path, capsys):
    argv = [a.replace("OUT", str(tmp_path / "o")) for a in argv]
    assert_user_error(main(argv), capsys.readouterr().err, needle)


@pytest.mark.parametrize("argv,needle", [
    (["train", "--out", "x", "--steps", "2.5"], "expected a whole number"),
    (["train", "--out", "x", "--schedule", "quadratic"], "invalid choice"),
    (["train", "--out", "x", "--prediction", "x0"], "invalid choice"),
    (["sample", "cat"], "--checkpoint"),
    (["sample", "--checkpoint", "x", "-n", "-3"], "expected a whole number from 1 to 100,000, got -3"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_flags_are_one_line_exit_2(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert_user_error(e.value.code, capsys.readouterr().err, needle)


def test_corrupt_checkpoint_is_a_user_error(tmp_path):
    bad = tmp_path / "checkpoint.safetensors"
    bad.write_bytes(b"\x80\x04 this is a pickle, not a checkpoint")
    result = run_cli("sample", "--checkpoint", str(tmp_path), "cat", "--out", str(tmp_path / "g.png"))
    assert_user_error(result.returncode, result.stderr, "not a readable ddpm checkpoint")


def test_python_m_entry_point_reports_bad_flag():
    result = run_cli("train", "--out", "x", "--batch-size", "zero")
    assert_user_error(result.returncode, result.stderr, "--batch-size")


def test_demo_smoke(tmp_path, capsys):
    """The main job end to end with 2 training steps: every promised file exists and its path is printed."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    for name in ("samples.png", "noising.gif", "noising_strip.png", "noising_alpha_bar.png", "training_curve.png",
                 "trajectory.gif", "trajectory_x0.png", "index.html"):
        assert (out / name).is_file(), name
        assert str(out / name) in printed
    with Image.open(out / "samples.png") as im:
        assert im.height > 10 * 28  # one row per class


def test_demo_never_overwrites_an_earlier_demo(tmp_path):
    from ddpm.demo import free_run_dir

    out = tmp_path / "demo"
    assert free_run_dir(out) == out
    out.mkdir()
    (out / "checkpoint.safetensors").write_bytes(b"x")
    assert free_run_dir(out) == tmp_path / "demo-2"


@pytest.mark.slow
def test_text_demo_smoke(tmp_path, capsys, monkeypatch):
    """`ddpm demo --text` end to end with 2 training steps and a short sampler: a text model with token
    cross-attention on builtin:shapes-text, one grid row per typed prompt, and a faithfulness table of seen and
    held-out scenes whose numbers are accuracies (the metric itself is tested in test_faithfulness.py)."""
    import json

    import ddpm.demo as demo
    import ddpm.evaluation.faithfulness as faithfulness
    from ddpm.config import RunConfig
    from ddpm.diffusion.sampling import SamplingConfig

    few = faithfulness.eval_scenes(3, 3)
    monkeypatch.setattr(demo, "DEMO_SAMPLING", SamplingConfig(sampler="ddim", steps=2))
    monkeypatch.setattr(faithfulness, "eval_scenes", lambda: few)
    out = tmp_path / "text"
    assert main(["demo", "--text", "--out", str(out), "--steps", "2", "--quiet", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    config = RunConfig.load(out / "config.json")
    assert (config.model.cond, config.model.channels, config.data.source) == ("text", 3, "builtin:shapes-text")
    assert config.model.text_tokens > 0
    table = json.loads((out / "faithfulness.json").read_text())
    assert table["scenes"] == {"seen": 3, "held_out": 3}
    assert all(0 <= table[g][a] <= 1 for g in ("seen", "held_out") for a in ("colour", "shape", "position"))
    assert "prompt faithfulness" in printed and str(out / "samples.png") in printed
    with Image.open(out / "samples.png") as im:
        assert im.height >= len(demo.TEXT_PROMPTS) * 32 * 3  # one row per prompt at scale 3
