"""The flags of `ddpm train` that set a config key: one table, from which the parser is built and the parsed flags
become a nested table like a config file's (resolve.py applies it over the file, the data and the preset).

A flag the user did not give is absent (argparse.SUPPRESS), so a preset, the data or a config file decides it. The
parser only turns text into numbers; the range and choice checks are the config fields' own (config.check_value)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Callable

from ddpm.common.parse import ascii_integer, ascii_real
from ddpm.config import (
    CONDITIONINGS,
    CROPS,
    LOGGERS,
    LOSS_WEIGHTINGS,
    LR_SCHEDULES,
    PRECISIONS,
    PREDICTIONS,
    SCHEDULES,
    TEXT_LR_SCALE,
    TEXT_MIN_SNR_FLOOR,
    TEXT_MIN_SNR_GAMMA,
    DataConfig,
    DiffusionConfig,
    ModelConfig,
    TrainConfig,
)
from ddpm.presets import PRESETS
from ddpm.resolve import PRESET_KEY


def whole(text: str) -> int:
    value = ascii_integer(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return value


def number(text: str) -> float:
    value = ascii_real(text)  # "nan", "inf" and Unicode digits are not numbers (common/parse)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return value


def whole_list(text: str) -> list[int]:
    values = [ascii_integer(v) for v in text.split(",") if v.strip()]
    if not values or any(v is None for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 1,2,2; got {text!r}")
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class Flag:
    name: str
    key: str  # "section.field", or PRESET_KEY
    help: str
    kwargs: dict[str, Any] = field(default_factory=dict)


_M, _D, _T, _DATA = ModelConfig(), DiffusionConfig(), TrainConfig(), DataConfig()
PRESET_HELP = "default: tiny for the built-in set; for a folder, base on a GPU and small on a CPU"
DATA_HELP = "default: from the data (data/probe.py)"
Kind = Callable[[str], Any]


def _f(name: str, key: str, help: str, type: Kind | None = None, choices: tuple | None = None,
       const: Any = None) -> Flag:
    kwargs: dict[str, Any] = {}
    if const is not None:
        kwargs = {"action": "store_const", "const": const}
    else:
        kwargs["type"] = type or str
        if choices:
            kwargs["choices"] = choices
    return Flag(name, key, help, kwargs)


TRAIN_FLAGS: list[Flag] = [
    _f("--data", "data.source", "builtin:animal-shapes, builtin:shapes-text (captioned, for --cond text), or a folder "
       f"with one subfolder per class or a metadata.jsonl (default: {_DATA.source})"),
    _f("--model", PRESET_KEY, f"model size preset, README.md's table ({PRESET_HELP})", choices=tuple(PRESETS)),
    _f("--image-size", "model.image_size", f"training resolution in px ({DATA_HELP})", whole),
    _f("--channels", "model.channels", f"1 grey, 3 RGB ({DATA_HELP})", whole, choices=(1, 3)),
    _f("--base-channels", "model.base_channels", "UNet width at full resolution (default: the preset's)", whole),
    _f("--channel-mults", "model.channel_mults", "width multiplier per resolution level (default: the preset's)", whole_list),
    _f("--num-res-blocks", "model.num_res_blocks", "residual blocks per level (default: the preset's)", whole),
    _f("--attention-resolutions", "model.attention_resolutions", "feature-map sizes with self-attention (default: the preset's)", whole_list),
    _f("--num-heads", "model.num_heads", f"attention heads (default: {_M.num_heads})", whole),
    _f("--dropout", "model.dropout", f"dropout in residual blocks (default: {_M.dropout})", number),
    _f("--cond", "model.cond", "class: class ids; text: captions (metadata.jsonl, else made from class names) through "
       f"all-MiniLM-L6-v2; none: unconditional (default: {_M.cond})", choices=CONDITIONINGS),
    _f("--text-tokens", "model.text_tokens", "text models: cross-attention over the caption's first N tokens "
       f"(0: the pooled sentence embedding only) (default: {_M.text_tokens})", whole),
    _f("--no-cross-positions", "model.cross_positions", "text models: no position code on the cross-attention "
       "queries (as in configs before format 4; docs/text.md)", const=False),
    _f("--sentence-film", "model.sentence_film", "text models with tokens: also feed the sentence embedding to "
       "every block by FiLM (as configs before format 5 did; docs/text.md)", const=True),
    _f("--no-text-clauses", "model.text_clauses", "text models with tokens: encode each caption in one piece "
       "instead of clause by clause (as configs before format 6; docs/text.md)", const=False),
    _f("--no-clause-positions", "model.clause_positions", "text models with clauses: start every clause at BERT "
       "position 0 (as format 6 did; docs/text.md)", const=False),
    _f("--grad-checkpointing", "model.checkpointing", "recompute activations in backward: less memory, about 1/3 "
       "more compute", const=True),
    _f("--schedule", "diffusion.schedule", f"noise schedule (default: {_D.schedule})", choices=SCHEDULES),
    _f("--timesteps", "diffusion.num_steps", f"number of diffusion steps T (default: {_D.num_steps})", whole),
    _f("--prediction", "diffusion.prediction", "what the network predicts: eps (the noise) or v (sqrt(ab) eps - "
       f"sqrt(1-ab) x0) (default: {_D.prediction})", choices=PREDICTIONS),
    _f("--loss-weighting", "diffusion.loss_weighting", "weight on the loss per step; trunc-min-snr (v only) trades "
       f"shape for layout, docs/text.md (default: {_D.loss_weighting})",
       choices=LOSS_WEIGHTINGS),
    _f("--min-snr-gamma", "diffusion.min_snr_gamma", "gamma of min-SNR weighting, the most weight of a step on the x0 "
       f"error (default: {TEXT_MIN_SNR_GAMMA:g} for text models, else {_D.min_snr_gamma:g})", number),
    _f("--min-snr-floor", "diffusion.min_snr_floor", "least weight of a min-SNR step on the x0 error, so the "
       f"highest-noise steps train (v only; default: {TEXT_MIN_SNR_FLOOR} for text models, else "
       f"{_D.min_snr_floor:g})", number),
    _f("--cond-drop", "diffusion.cond_drop_prob", "probability of dropping the class or caption, for guidance "
       f"(default: {_D.cond_drop_prob})", number),
    _f("--steps", "train.steps", "optimiser steps (default: the preset's)", whole),
    _f("--batch-size", "train.batch_size", "images per micro-batch and rank (default: the preset's)", whole),
    _f("--grad-accum", "train.grad_accum", "micro-batches per optimiser step: the global batch is batch size x ranks x "
       f"this (default: {_T.grad_accum})", whole),
    _f("--lr", "train.lr", f"peak learning rate, AdamW (default: the preset's; {TEXT_LR_SCALE:g} x that for text "
       "models)", number),
    _f("--warmup", "train.warmup_steps", "linear LR warm-up steps (default: 5%% of the steps, at most 1,000)", whole),
    _f("--lr-schedule", "train.lr_schedule", f"LR after warm-up (default: {_T.lr_schedule}: decays to 0)",
       choices=LR_SCHEDULES),
    _f("--weight-decay", "train.weight_decay", f"AdamW weight decay (default: {_T.weight_decay})", number),
    _f("--ema-rel-std", "train.ema_rel_std", "width of the power EMA of the weights as a fraction of the training "
       f"so far (default: {_T.ema_rel_std}; training/optim.py)", number),
    _f("--ema-decay", "train.ema_decay", "a fixed EMA decay instead of the power EMA (e.g. 0.9999)", number),
    _f("--grad-clip", "train.grad_clip", f"max gradient norm, 0: off (default: {_T.grad_clip})", number),
    _f("--no-hflip", "train.hflip", "do not mirror training images at random", const=False),
    _f("--balance", "train.balance", "sample every class equally often (epoch = classes x ceil(N / classes))", const=True),
    _f("--precision", "train.precision", "auto: bf16 where native (CUDA 8.0+, CPUs with AVX512-BF16/AMX), fp16 on "
       f"older CUDA GPUs, else fp32 (default: {_T.precision})", choices=PRECISIONS),
    _f("--threads", "train.threads", "CPU threads for training, 0: torch's default (all cores)", whole),
    _f("--seed", "train.seed", f"seed of weights, batches, steps and noise (default: {_T.seed})", whole),
    _f("--log", "train.log", "where curves and sample grids go beside metrics.jsonl: tensorboard (OUT/tb), wandb "
       "(TensorBoard and Weights & Biases; needs `pip install wandb`; WANDB_MODE=offline works without a network), "
       f"none (default: {_T.log})", choices=LOGGERS),
    _f("--log-every", "train.log_every", f"steps between logged metrics (default: {_T.log_every})", whole),
    _f("--sample-every", "train.sample_every", "steps between sample grids (OUT/samples/step-N.png), 0: never "
       f"(default: {_T.sample_every})", whole),
    _f("--eval-every", "train.eval_every", "steps between quality measurements while training (KID on Inception "
       "features, and per-class accuracy with --eval-classifier), the best kept as OUT/best.safetensors; 0: never "
       f"(default: {_T.eval_every})", whole),
    _f("--eval-samples", "train.eval_samples", "images per such measurement (default: sized to cost about 10%% of "
       "the training time, fixed at the first)", whole),
    _f("--eval-classifier", "train.eval_classifier", "a domain classifier (ddpm classifier train) for --eval-every"),
    _f("--save-every", "train.save_every", f"steps between checkpoints, 0: only at the end (default: {_T.save_every})", whole),
    _f("--snapshot-every", "train.snapshot_every", "steps between training-state snapshots for resuming, 0: only on "
       f"SIGTERM/SIGINT and at the end (default: {_T.snapshot_every})", whole),
    _f("--keep-snapshots", "train.keep_snapshots", f"newest snapshots kept in OUT/snapshots (default: {_T.keep_snapshots})", whole),
    _f("--crop", "data.crop", f"folders: centre square, or a random window of a 9/8 larger one (default: {_DATA.crop})",
       choices=CROPS),
    _f("--background", "data.background", f"folders: colour under transparent pixels, white, black, gray or #rrggbb "
       f"(default: {_DATA.background})"),
    _f("--min-size", "data.min_size", f"folders: skip images whose shorter side is smaller, px (default: {_DATA.min_size})", whole),
]
FLAG_NAMES = {f.key: f.name for f in TRAIN_FLAGS}


def add_train_flags(p: argparse.ArgumentParser) -> None:
    for f in TRAIN_FLAGS:
        p.add_argument(f.name, dest=f.key, default=argparse.SUPPRESS, help=f.help, **f.kwargs)


def flags_table(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys the user set by flag, as a nested table {"preset": ..., "train": {"lr": ...}, ...}."""
    table: dict[str, Any] = {}
    for f in TRAIN_FLAGS:
        if hasattr(args, f.key):
            value = getattr(args, f.key)
            if "." not in f.key:
                table[f.key] = value
            else:
                section, name = f.key.split(".")
                table.setdefault(section, {})[name] = value
    return table
