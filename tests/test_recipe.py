"""The measured recipe as the default, shaped by the data: the power EMA against its closed form, the presets,
the data probe, the precedence preset < data < config file < flags, config files and --print-config, format-1
configs read as they were trained, and every `ddpm` command line in the README parsing."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddpm.cli import build_parser, main
from ddpm.cli.train_flags import FLAG_NAMES, flags_table
from ddpm.config import FORMAT_VERSION, RunConfig
from ddpm.presets import PRESETS, level_sizes, preset_fields
from ddpm.resolve import check_table, resolve_config
from ddpm.training.optim import ema_decay_for, power_ema_gamma

ROOT = Path(__file__).resolve().parents[1]


# ---- the power EMA ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sigma,gamma", [(0.10, 6.94), (0.05, 16.97)])
def test_power_ema_gamma_matches_edm2s_published_pairs(sigma, gamma):
    assert power_ema_gamma(sigma) == pytest.approx(gamma, abs=0.01)


@pytest.mark.parametrize("sigma", [0.05, 0.1, 0.2])
def test_the_profile_t_to_the_gamma_has_the_asked_standard_deviation(sigma):
    """Independent of the formula in optim.py: integrate the density (gamma+1) t^gamma on [0, 1] numerically."""
    g = power_ema_gamma(sigma)
    t = np.linspace(0, 1, 2_000_001)
    p = (g + 1) * t**g
    mean = np.trapezoid(t * p, t)
    std = np.sqrt(np.trapezoid((t - mean) ** 2 * p, t))
    assert std == pytest.approx(sigma, rel=1e-4)


def test_the_power_ema_recursion_is_the_closed_form_weighted_average():
    """e_n = sum_i theta_i (i^(g+1) - (i-1)^(g+1)) / n^(g+1): the recursion with d_i = (1 - 1/i)^(g+1) telescopes to
    these weights (they sum to 1; the weight of the first update is (1/n)^(g+1), so the start is forgotten)."""
    rng = np.random.default_rng(0)
    theta = rng.normal(size=300)
    g = power_ema_gamma(0.1)
    e = 0.0
    for step, th in enumerate(theta):  # step 0 is the first update
        d = ema_decay_for(step, None, 0.1)
        e = d * e + (1 - d) * th
    n = len(theta)
    i = np.arange(1, n + 1, dtype=np.float64)
    weights = (i ** (g + 1) - (i - 1) ** (g + 1)) / n ** (g + 1)
    assert weights.sum() == pytest.approx(1.0)
    assert e == pytest.approx(float(weights @ theta), rel=1e-9, abs=1e-12)


def test_a_fixed_decay_keeps_its_old_warm_up():
    assert ema_decay_for(0, 0.999, 0.1) == pytest.approx(0.1)
    assert ema_decay_for(10**6, 0.999, 0.1) == 0.999


# ---- presets and the data's shape --------------------------------------------------------------------------------

def test_levels_stop_at_7_or_8_px():
    assert level_sizes(28) == [28, 14, 7]
    assert level_sizes(32) == [32, 16, 8]
    assert level_sizes(64) == [64, 32, 16, 8]
    assert level_sizes(256) == [256, 128, 64, 32, 16]  # at most five levels


def test_tiny_at_28_px_is_the_demo_model_and_base_at_64_is_ddpms_network_with_one_more_level():
    tiny = preset_fields("tiny", 28)["model"]
    assert tiny == {"base_channels": 32, "channel_mults": [1, 2, 2], "num_res_blocks": 1, "attention_resolutions": [7]}
    base = preset_fields("base", 64)["model"]
    assert base == {"base_channels": 128, "channel_mults": [1, 2, 2, 2], "num_res_blocks": 2,
                    "attention_resolutions": [16, 8]}
    assert preset_fields("large", 64)["model"]["attention_resolutions"] == [32, 16, 8]
    for name in PRESETS:  # every preset builds a valid model at the usual sizes
        for size in (28, 32, 64):
            config = resolve_config({"preset": name, "model": {"image_size": size, "channels": 3}}).config
            config.validate()


def _tree(root: Path, colour: bool, side: int, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 256, (side, side + 10, 3), dtype=np.uint8)
            im = Image.fromarray(a) if colour else Image.fromarray(a[..., 0]).convert("RGB")  # grey stored as RGB
            im.save(root / cls / f"{i}.png")
    return root


def test_colour_folder_gives_3_channels_and_grey_folder_1_with_the_reasons(tmp_path):
    colour = resolve_config({"data": {"source": str(_tree(tmp_path / "c", True, 100))}})
    assert (colour.config.model.channels, colour.config.model.image_size) == (3, 64)
    assert "3 channels" in colour.notes[1] and "12 of 12 sampled images have colour" in colour.notes[1]
    assert "median shorter side is 100 px" in colour.notes[1]
    grey = resolve_config({"data": {"source": str(_tree(tmp_path / "g", False, 100))}})
    assert grey.config.model.channels == 1 and "0 of 12" in grey.notes[1]


def test_small_images_give_the_largest_multiple_of_8_below_their_median(tmp_path):
    r = resolve_config({"data": {"source": str(_tree(tmp_path / "s", True, 45))}})
    assert r.config.model.image_size == 40


def test_channels_1_on_colour_data_says_once_that_colour_is_dropped(tmp_path):
    r = resolve_config({"data": {"source": str(_tree(tmp_path / "c", True, 100))}, "model": {"channels": 1}})
    assert r.config.model.channels == 1
    assert sum("drops the colour" in n for n in r.notes) == 1


def test_the_preset_follows_the_data_and_the_device(tmp_path):
    import torch

    assert resolve_config({}).preset == "tiny"
    folder = str(_tree(tmp_path / "c", True, 100))
    assert resolve_config({"data": {"source": folder}}, device=torch.device("cpu")).preset == "small"
    assert resolve_config({"data": {"source": folder}}, device=torch.device("cuda", 0)).preset == "base"


def test_builtin_defaults_are_the_recipe_on_the_tiny_model():
    c = resolve_config({}).config
    assert (c.model.channels, c.model.image_size, c.model.base_channels) == (1, 28, 32)
    assert (c.diffusion.schedule, c.diffusion.prediction, c.diffusion.loss_weighting) == ("cosine", "v", "min-snr")
    assert (c.train.lr, c.train.lr_schedule, c.train.steps, c.train.warmup()) == (2e-3, "cosine", 1000, 50)
    assert c.train.ema_decay is None and c.train.ema_rel_std == 0.1


def test_precedence_preset_then_data_then_file_then_flags(tmp_path):
    file = tmp_path / "run.toml"
    file.write_text('preset = "base"\n[model]\nimage_size = 32\n[train]\nlr = 5e-4\nsteps = 7\n')
    c = resolve_config({"train": {"steps": 9}}, file).config
    assert c.model.base_channels == 128  # the file's preset
    assert c.model.image_size == 32 and c.model.channels == 1  # the file's size; the data's channels
    assert c.train.lr == 5e-4 and c.train.steps == 9  # the file's lr; the flag's steps
    assert c.train.batch_size == PRESETS["base"].batch_size
    over = resolve_config({"preset": "tiny"}, file).config  # a preset flag overrides the file's preset and keys
    assert over.model.base_channels == 32 and over.train.lr == 2e-3 and over.model.image_size == 32


# ---- config files through the CLI: one line, exit 2 --------------------------------------------------------------

@pytest.mark.parametrize("name,text,expected", [
    ("unknown.toml", "[train]\nlrr = 1\n", "unknown key train.lrr"),
    ("type.toml", "[train]\nsteps = \"many\"\n", "train.steps must be a whole number"),
    ("section.toml", "[training]\nsteps = 3\n", "unknown section 'training'"),
    ("syntax.toml", "[train\n", "not valid TOML"),
    ("syntax.json", "{\"train\": ", "not valid JSON"),
    ("notutf8.toml", b"\xff\xfe[train]", "not UTF-8"),
    ("range.json", '{"model": {"channels": 2}}', "model.channels must be one of 1, 3"),
    ("bool.json", '{"train": {"steps": true}}', "train.steps must be a whole number"),
    ("preset.toml", 'preset = "huge"\n', "preset must be one of tiny, small, base, large"),
])
def test_bad_config_files_are_one_line_naming_file_and_key(tmp_path, capsys, name, text, expected):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(path) in err and expected in err, err
    assert not out.exists()


def test_an_unreadable_config_file_is_one_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--config", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read the config file" in err


def test_a_bad_flag_value_names_the_flag(capsys):
    assert main(["train", "--out", "unused", "--lr", "-1"]) == 2
    assert "--lr must be a number > 0, got -1.0" in capsys.readouterr().err


def test_print_config_read_back_gives_the_same_configuration(tmp_path, capsys):
    file = tmp_path / "run.toml"
    file.write_text('preset = "small"\n[diffusion]\nschedule = "linear"\n')
    assert main(["train", "--out", str(tmp_path / "a"), "--config", str(file), "--lr", "3e-4", "--print-config"]) == 0
    first = capsys.readouterr().out
    (tmp_path / "printed.json").write_text(first)
    assert main(["train", "--out", str(tmp_path / "b"), "--config", str(tmp_path / "printed.json"), "--print-config"]) == 0
    assert capsys.readouterr().out == first
    config = RunConfig.from_dict(json.loads(first))
    assert (config.train.lr, config.diffusion.schedule, config.model.base_channels) == (3e-4, "linear", 64)
    assert not (tmp_path / "a").exists()  # --print-config trains nothing


# ---- runs trained before the recipe became the default -----------------------------------------------------------

def test_a_format_1_config_without_the_changed_keys_means_the_old_defaults():
    d = RunConfig().to_dict()
    d["format_version"] = 1
    for key in ("schedule", "prediction", "loss_weighting"):
        del d["diffusion"][key]
    for key in ("lr", "warmup_steps", "lr_schedule", "ema_decay"):
        del d["train"][key]
    c = RunConfig.from_dict(d)
    assert (c.diffusion.schedule, c.diffusion.prediction, c.diffusion.loss_weighting) == ("linear", "eps", "none")
    assert (c.train.lr, c.train.warmup(), c.train.lr_schedule, c.train.ema_decay) == (2e-4, 100, "constant", 0.999)
    assert RunConfig().format_version == FORMAT_VERSION == 7
    d2 = RunConfig().to_dict()
    del d2["diffusion"]["schedule"]
    assert RunConfig.from_dict(d2).diffusion.schedule == "cosine"  # today's format without the key: today's default


@pytest.mark.parametrize("version", [1, 2])
def test_a_text_model_from_before_format_3_reads_the_sentence_embedding_only(version):
    """Formats 1 and 2 had no text_tokens: their text models were built without cross-attention, and must load as
    they were trained; today's default attends to tokens."""
    d = RunConfig().to_dict()
    d["format_version"] = version
    del d["model"]["text_tokens"]
    assert RunConfig.from_dict(d).model.text_tokens == 0
    assert RunConfig().model.text_tokens > 0


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_text_model_from_before_format_4_has_no_position_code_on_its_queries(version):
    """Formats 1-3 had no cross_positions: their cross-attention queries carried no position code, and a checkpoint
    of theirs must be rebuilt so (the code has no weights, so a wrong default would load silently and draw worse)."""
    d = RunConfig().to_dict()
    d["format_version"] = version
    del d["model"]["cross_positions"]
    assert RunConfig.from_dict(d).model.cross_positions is False
    assert RunConfig().model.cross_positions is True


def test_continuing_a_run_takes_its_own_settings_not_todays_defaults(tmp_path):
    """A run trained with the old recipe and continued by `--resume auto` keeps linear/eps (launch.resume_base)."""
    from ddpm.launch import resume_base

    run = tmp_path / "old"
    run.mkdir()
    old = RunConfig()
    old.diffusion.schedule, old.diffusion.prediction = "linear", "eps"
    old.save(run / "config.json")
    base = resume_base(run, "auto")
    assert base == run / "config.json"
    c = resolve_config({"train": {"steps": 5}}, base).config
    assert (c.diffusion.schedule, c.diffusion.prediction, c.train.steps) == ("linear", "eps", 5)
    assert resume_base(run, "never") is None



@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_a_text_model_from_before_format_5_feeds_its_sentence_by_film_and_trained_without_a_floor(version):
    d = RunConfig().to_dict()
    d["format_version"] = version
    del d["model"]["sentence_film"], d["diffusion"]["min_snr_floor"]
    c = RunConfig.from_dict(d)
    assert c.model.sentence_film is True and c.diffusion.min_snr_floor == 0
    assert RunConfig().model.sentence_film is False


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
def test_a_text_model_from_before_format_6_encodes_each_caption_in_one_piece(version):
    """A run trained before clauses (format <= 5, no text_clauses key) is conditioned at sampling time as it was
    trained; a config of format 6 that leaves the key out gets clauses, and --no-text-clauses turns them off."""
    d = RunConfig().to_dict()
    d["format_version"] = version
    del d["model"]["text_clauses"]
    assert RunConfig.from_dict(d).model.text_clauses is False
    d["format_version"] = 6
    assert RunConfig.from_dict(d).model.text_clauses is True
    args = build_parser().parse_args(["train", "--data", "builtin:shapes-text", "--out", "run", "--no-text-clauses"])
    assert flags_table(args)["model"]["text_clauses"] is False
    assert resolve_config(flags_table(args)).config.model.text_clauses is False


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6])
def test_a_text_model_from_before_format_7_starts_every_clause_at_position_0(version):
    """A run of format 6 (clauses, no clause_positions key) keeps encoding each clause from BERT position 0, as it
    was trained; format 7 without the key continues the positions, and --no-clause-positions restarts them."""
    from ddpm.text.condition import TextLayout

    d = RunConfig().to_dict()
    d["format_version"] = version
    del d["model"]["clause_positions"]
    old = RunConfig.from_dict(d).model
    assert old.clause_positions is False
    assert TextLayout.of(old) == TextLayout(32, clauses=True, continued=False)
    d["format_version"] = 7
    assert TextLayout.of(RunConfig.from_dict(d).model) == TextLayout(32, clauses=True, continued=True)
    args = build_parser().parse_args(["train", "--data", "builtin:shapes-text", "--out", "run", "--no-clause-positions"])
    assert resolve_config(flags_table(args)).config.model.clause_positions is False


def test_text_models_get_the_min_snr_floor_and_gamma_and_class_models_do_not(tmp_path):
    """`ddpm train` gives a text model with v-prediction the floor and the low gamma (and says so); a class model,
    an eps text model and a floor or gamma set by hand keep theirs; an older run's config.json (format 4, no floor
    key; gamma 5 written as every config writes its gamma) continues without a floor and at gamma 5."""
    from ddpm.config import TEXT_MIN_SNR_FLOOR, TEXT_MIN_SNR_GAMMA

    text = resolve_config({"data": {"source": "builtin:shapes-text"}})
    assert text.config.diffusion.min_snr_floor == TEXT_MIN_SNR_FLOOR > 0
    assert text.config.diffusion.min_snr_gamma == TEXT_MIN_SNR_GAMMA == 2
    assert any("clip(SNR, 0.05, 2)" in note for note in text.notes)
    plain = resolve_config({}).config.diffusion  # the built-in class set
    assert (plain.min_snr_floor, plain.min_snr_gamma) == (0, 5)
    eps = resolve_config({"data": {"source": "builtin:shapes-text"}, "diffusion": {"prediction": "eps"}})
    assert (eps.config.diffusion.min_snr_floor, eps.config.diffusion.min_snr_gamma) == (0, 5)
    mine = resolve_config({"data": {"source": "builtin:shapes-text"}, "diffusion": {"min_snr_floor": 0.2}})
    assert (mine.config.diffusion.min_snr_floor, mine.config.diffusion.min_snr_gamma) == (0.2, TEXT_MIN_SNR_GAMMA)
    assert any("clip(SNR, 0.2, 2)" in note for note in mine.notes)
    mine = resolve_config({"data": {"source": "builtin:shapes-text"}, "diffusion": {"min_snr_gamma": 5}})
    assert (mine.config.diffusion.min_snr_floor, mine.config.diffusion.min_snr_gamma) == (TEXT_MIN_SNR_FLOOR, 5)
    both = resolve_config({"data": {"source": "builtin:shapes-text"},
                           "diffusion": {"min_snr_gamma": 3, "min_snr_floor": 0.1}})
    assert not any("clip(SNR" in note for note in both.notes)  # nothing chosen for the user: nothing to say
    old = text.config.to_dict()
    old["diffusion"]["min_snr_gamma"] = 5.0
    old["format_version"] = 4
    del old["diffusion"]["min_snr_floor"], old["model"]["sentence_film"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    again = resolve_config({"train": {"steps": 5}}, tmp_path / "config.json").config
    assert again.diffusion.min_snr_floor == 0 and again.model.sentence_film is True
    assert again.diffusion.min_snr_gamma == 5


def test_text_models_train_at_a_lower_learning_rate_unless_one_is_given(tmp_path):
    """`ddpm train` gives a text model 0.7 of its preset's learning rate (tiny 2e-3 -> 1.4e-3, small 1e-3 -> 7e-4)
    and says so; a class model keeps the preset's; an lr given by flag or written in a run's config.json (every
    config.json holds its lr, so older text runs continue at 2e-3) is kept, with nothing said."""
    from ddpm.config import TEXT_LR_SCALE

    assert TEXT_LR_SCALE == 0.7
    text = resolve_config({"data": {"source": "builtin:shapes-text"}})
    assert text.config.train.lr == pytest.approx(1.4e-3, rel=1e-12)
    assert any(note.startswith("lr: 0.0014 for a text model (0.7 x the preset's 0.002") for note in text.notes)
    assert resolve_config({}).config.train.lr == 2e-3  # the class demo: the tiny preset's
    small = resolve_config({"preset": "small", "data": {"source": "builtin:shapes-text"}}).config.train.lr
    assert small == pytest.approx(7e-4, rel=1e-12)
    assert resolve_config({"model": {"cond": "text"}}).config.train.lr == pytest.approx(1.4e-3, rel=1e-12)
    mine = resolve_config({"data": {"source": "builtin:shapes-text"}, "train": {"lr": 2e-3}})
    assert mine.config.train.lr == 2e-3 and not any(note.startswith("lr:") for note in mine.notes)
    old = text.config.to_dict()
    old["train"]["lr"] = 2e-3  # a text run trained before the scale
    (tmp_path / "config.json").write_text(json.dumps(old))
    again = resolve_config({"train": {"steps": 5}}, tmp_path / "config.json")
    assert again.config.train.lr == 2e-3 and not any(note.startswith("lr:") for note in again.notes)


def test_a_floor_on_eps_is_refused_in_one_line(capsys):
    with pytest.raises(ValueError, match="needs prediction v"):
        RunConfig.from_dict({"diffusion": {"prediction": "eps", "min_snr_floor": 0.05}})
    assert main(["train", "--data", "builtin:shapes-text", "--prediction", "eps", "--min-snr-floor", "0.1",
                 "--steps", "1", "--out", "/nonexistent/never"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--min-snr-floor 0" in err[0]

# ---- every command line in the README parses ---------------------------------------------------------------------

def _readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```(?:sh|bash)\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for text in joined.splitlines():
            for line in text.split(" #")[0].split(";"):  # a comment; several commands on one line
                line = re.split(r" [>|] ", line)[0].strip()  # a redirection or a pipe
                if line.startswith("ddpm "):
                    commands.append(shlex.split(line)[1:])
                elif " -m ddpm " in line:
                    commands.append(shlex.split(line.split(" -m ddpm ", 1)[1]))
    return commands


def test_every_ddpm_command_in_the_readme_parses():
    commands = _readme_commands()
    assert len(commands) >= 20 and any(c[0] == "train" for c in commands)
    parser = build_parser()
    for argv in commands:
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"README command does not parse: ddpm {shlex.join(argv)}")
        if args.command == "train":  # values in range too (resolve.py's checks)
            check_table(flags_table(args), "", FLAG_NAMES)


# ---- a folder trained with nothing but --data, --out and --steps ----------------------------------------------------

@pytest.mark.parametrize("colour,channels", [(True, 3), (False, 1)])
def test_a_folder_trained_with_only_data_out_and_steps_gets_its_shape_and_the_recipe(tmp_path, capsys, colour, channels):
    tree = _tree(tmp_path / "tree", colour, 20, n=4)
    out = tmp_path / "run"
    assert main(["train", "--data", str(tree), "--out", str(out), "--steps", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"{channels} channel" in printed and "16 px (the median shorter side is 20 px" in printed
    assert "model preset small" in printed
    c = RunConfig.load(out / "config.json")
    assert (c.model.channels, c.model.image_size, c.model.base_channels) == (channels, 16, 64)
    assert (c.diffusion.schedule, c.diffusion.prediction, c.diffusion.loss_weighting) == ("cosine", "v", "min-snr")
    assert c.train.ema_decay is None and c.train.lr_schedule == "cosine" and c.format_version == FORMAT_VERSION
    from ddpm.api import load_run

    run = load_run(out)
    assert run.sample(None, 1).shape == (2, channels, 16, 16)
