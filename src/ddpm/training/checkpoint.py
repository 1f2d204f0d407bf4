"""Checkpoints: tensors in safetensors (no pickle, no code runs on load) plus the run config as JSON.

A run directory holds
    config.json               the RunConfig (also embedded in the checkpoint's metadata)
    checkpoint.safetensors    `model.*` (raw weights) and `ema.*` (EMA weights) tensors; metadata: config, step
"""

from __future__ import annotations

from pathlib import Path

import torch

from ddpm.common.errors import UserError
from ddpm.common.files import UnreadableFile, read_safetensors, write_safetensors
from ddpm.common.parse import ascii_integer, json_value
from ddpm.config import RunConfig

CHECKPOINT_NAME = "checkpoint.safetensors"


def save_checkpoint(path: Path, config: RunConfig, model: torch.nn.Module, ema: torch.nn.Module, step: int) -> None:
    """Write atomically (common.files): after a crash `path` holds the previous checkpoint or this one, whole."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    write_safetensors(path, tensors, metadata={"config": config.to_json(), "step": str(step), "format": "ddpm"})


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run directory or a checkpoint file; fail with one line when there is none."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise UserError(f"no checkpoint at {path}; pass a run directory made by `ddpm train` or its {CHECKPOINT_NAME}")
    return p


def load_checkpoint(path: str | Path) -> tuple[RunConfig, dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
    """Return (config, model weights, EMA weights, step) without executing anything from the file."""
    p = resolve_checkpoint(path)
    try:
        tensors, meta = read_safetensors(p)
    except UnreadableFile as e:
        raise UserError(f"{p} is not a readable ddpm checkpoint ({e.reason}); retrain or point to another run") from None
    if meta.get("format") != "ddpm" or "config" not in meta:
        raise UserError(f"{p} is a safetensors file but not a ddpm checkpoint; point to a run made by `ddpm train`")
    try:
        config = RunConfig.from_dict(json_value(meta["config"]))
        config.model.validate()
    except (ValueError, TypeError) as e:
        raise UserError(f"{p} has an unusable config ({str(e).splitlines()[0][:200]}); it is damaged or from another "
                        "program: retrain or point to another run") from None
    step = ascii_integer(meta.get("step", "0"))
    if step is None or step < 0:
        raise UserError(f"{p} has an unusable step {meta['step'][:40]!r} (a whole number >= 0 expected); it is damaged or from "
                        "another program: retrain or point to another run")
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    ema = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
    return config, model, ema, step
