"""From what a user gives (a preset name, a config file, flags) and what the data shows, to one RunConfig.

Precedence, later wins:
    the recipe (config.py's defaults: cosine schedule, v-prediction, min-SNR-5, cosine LR decay, power EMA)
  < the preset (presets.py; `tiny` for the built-in sets, else `base` on a GPU and `small` on a CPU)
  < the data's shape (data/probe.py: colour or grey, image size; text conditioning for the captioned
    builtin:shapes-text), unless the user set it
  < for a text model with v-prediction and min-SNR: a min-SNR floor and gamma (config.TEXT_MIN_SNR_FLOOR and
    TEXT_MIN_SNR_GAMMA), each unless set; for any text model, config.TEXT_LR_SCALE of the preset's learning rate,
    unless the learning rate is set
  < the config file (`--config`, TOML or JSON; a run's config.json is one); a preset it names sits just below it
  < the flags; a preset they name (`--model`) sits just below them, above the file's model keys
Every value the user gives is checked by its config field's one check (config.check_value); an error names the
flag or the file and key. `notes` are the start-up lines that say what was chosen and why."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ddpm.common.errors import UserError
from ddpm.common.ostext import as_text
from ddpm.config import (FORMAT_VERSION, SECTIONS, TEXT_LR_SCALE, TEXT_MIN_SNR_FLOOR, TEXT_MIN_SNR_GAMMA, DataConfig,
                         RunConfig, check_value, read_config_file, with_format_defaults)
from ddpm.data.shapes_text import SHAPES_TEXT
from ddpm.data.probe import probe_shape
from ddpm.presets import PRESETS, preset_fields

PRESET_KEY = "preset"  # the top-level key of a config file (the flag --model) that names a preset


@dataclass
class Resolution:
    config: RunConfig
    preset: str
    notes: list[str] = field(default_factory=list)  # what was chosen and why, one line each


def resolve_config(flags: dict[str, Any] | None = None, config_file: str | Path | None = None,
                   device: torch.device | str = "cpu", flag_names: dict[str, str] | None = None) -> Resolution:
    """The RunConfig of `flags` (a nested table like a config file's: {"preset": "base", "train": {"lr": 1e-4}})
    over `config_file` over the data's shape over the preset over the recipe; a UserError (one line) for a bad
    key or value. `flag_names` maps "section.key" to the flag that set it, for error messages."""
    names = flag_names or {}
    layers: list[tuple[dict[str, Any], str]] = []
    if config_file is not None:
        try:
            table = read_config_file(config_file)
            version = table.get("format_version", FORMAT_VERSION)
            if isinstance(version, int) and not isinstance(version, bool) and 1 <= version < FORMAT_VERSION:
                table = with_format_defaults(table, version)  # an older run's file keeps what it meant
            layers.append((table, f"{config_file}: "))
        except ValueError as e:
            raise UserError(str(e)) from None
    layers.append((flags or {}, ""))
    user: dict[str, Any] = {}
    for table, where in layers:
        check_table(table, where, {} if where else names)  # a file's errors name its keys, the flags' the flags
        _merge(user, table)
    given = {f"{s}.{k}" for s, keys in user.items() if isinstance(keys, dict) for k in keys}
    source = user.get("data", {}).get("source", DataConfig().source)

    notes: list[str] = [f"settings from {config_file} (flags override them)"] if config_file is not None else []
    model = user.get("model", {})
    probed = None
    if "model.channels" not in given or "model.image_size" not in given:
        probed = probe_shape(source)
    channels = model.get("channels", probed.channels if probed else 1)
    size = model.get("image_size", probed.image_size if probed else 32)
    preset = user.get(PRESET_KEY) or _auto_preset(source, torch.device(device))
    why_preset = "given" if user.get(PRESET_KEY) else (
        "a built-in set" if source.startswith("builtin:") else f"a folder of images on {torch.device(device).type.upper()}")
    notes.append(f"model preset {preset} ({why_preset}; --model tiny|small|base|large to change)")
    notes.append("shape: " + _shape_note(channels, size, probed, given))
    if probed is not None and channels == 1 and probed.channels == 3 and "model.channels" in given:
        notes.append(f"note: --channels 1 drops the colour of this data ({probed.colour_why})")

    merged = RunConfig().to_dict()
    if not user.get(PRESET_KEY):
        _merge(merged, preset_fields(preset, size))
    _merge(merged, {"model": {"channels": channels, "image_size": size}})
    if source == SHAPES_TEXT and "model.cond" not in given:  # a set made for captions: condition on them
        _merge(merged, {"model": {"cond": "text"}})
        notes.append("conditioning: text (the generated shapes are captioned; --cond class to change)")
    for table, _ in layers:  # a preset named in a layer sits below that layer's keys and above the earlier layers'
        if table.get(PRESET_KEY):
            _merge(merged, preset_fields(table[PRESET_KEY], size))
        _merge(merged, {k: v for k, v in table.items() if k not in (PRESET_KEY, "format_version")})
    text = merged["model"]["cond"] == "text"
    if text and merged["diffusion"]["prediction"] == "v" and merged["diffusion"]["loss_weighting"] == "min-snr":
        text_loss = {"min_snr_floor": TEXT_MIN_SNR_FLOOR,  # where a text model places what it draws
                     "min_snr_gamma": TEXT_MIN_SNR_GAMMA}  # less weight on fine detail: the shapes come sooner
        chosen = {k: v for k, v in text_loss.items() if f"diffusion.{k}" not in given}
        merged["diffusion"].update(chosen)
        if chosen:
            d = merged["diffusion"]
            notes.append(f"loss: min-SNR clip(SNR, {d['min_snr_floor']:g}, {d['min_snr_gamma']:g}) for a text model "
                         "(the floor trains the high noise where the caption places things, the low gamma the shapes; "
                         "docs/text.md; --min-snr-floor, --min-snr-gamma to change)")
    if text and "train.lr" not in given:
        preset_lr = merged["train"]["lr"]  # the preset's (a preset sets every run's lr)
        merged["train"]["lr"] = TEXT_LR_SCALE * preset_lr
        notes.append(f"lr: {merged['train']['lr']:g} for a text model ({TEXT_LR_SCALE:g} x the preset's {preset_lr:g}: "
                     "fewer runs miss their shapes; docs/text.md; --lr to change)")
    try:
        config = RunConfig.from_dict(merged)
    except ValueError as e:
        raise UserError(str(e)) from None
    return Resolution(config, preset, notes)


def _auto_preset(source: str, device: torch.device) -> str:
    if source.startswith("builtin:"):  # the built-in sets are small and simple: the preset sized for a CPU
        return "tiny"
    return "base" if device.type == "cuda" else "small"


def _shape_note(channels: int, size: int, probed: Any, given: set[str]) -> str:
    chan = f"{channels} channel{'s' if channels > 1 else ''} ({'RGB' if channels == 3 else 'grey'}"
    chan += ", as asked)" if "model.channels" in given else f": {probed.colour_why})"
    px = f"{size} px" + (" (as asked)" if "model.image_size" in given else f" ({probed.size_why})")
    return f"{chan}, {px}"


def check_table(table: dict[str, Any], where: str, names: dict[str, str]) -> None:
    """Every key and value of one layer (a config file or the flags) by its field's check; a UserError whose line
    starts with `where` (the file) and names the flag (`names`) or the key."""
    for section, keys in table.items():
        if section == PRESET_KEY:
            if keys not in PRESETS:
                what = names.get(PRESET_KEY, PRESET_KEY)
                raise UserError(f"{where}{what} must be one of {', '.join(PRESETS)}, got {keys!r}")
            continue
        if section == "format_version":
            continue
        if not isinstance(keys, dict):  # as_text: a section named with a line break stays one line
            raise UserError(f"{where}{as_text(str(section))} must be a table of keys"
                            + ("" if section in SECTIONS else f"; the sections are {', '.join(SECTIONS)} (and preset)"))
        for name, value in keys.items():
            error = check_value(section, name, value)
            if error:
                flag = names.get(f"{section}.{name}")
                raise UserError(f"{where}{error.replace(f'{section}.{name}', flag, 1) if flag else error}")


def _merge(into: dict[str, Any], table: dict[str, Any]) -> None:
    """Deep-merge `table` into `into` (later keys win; lists are replaced, not joined)."""
    for key, value in table.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
