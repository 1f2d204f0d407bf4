"""Typed configuration of a run: one `RunConfig` is written beside the outputs and inside every checkpoint,
so a run can be rebuilt from its directory alone (no flags needed to sample)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ddpm.common.files import write_text_atomic

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"  # the RunConfig in a run directory
CONDITIONINGS = ("class", "text", "none")


@dataclass
class ModelConfig:
    """Shape of the conditional UNet (see network/unet.py)."""

    image_size: int = 32
    channels: int = 1  # 1 (grayscale) or 3 (RGB)
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 2)  # one entry per resolution level; len-1 downsamplings
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (8,)  # feature-map sizes (px) that get self-attention
    num_heads: int = 4
    dropout: float = 0.0
    num_classes: int = 10  # the class embedding has num_classes + 1 rows; the last is the learned null
    checkpointing: bool = False  # recompute each block's activations in backward: less memory, ~1/3 more compute
    cond: str = "class"  # class: class ids; text: sentence embeddings (text_dim); none: unconditional
    text_dim: int = 384  # width of the frozen text encoder's embeddings (all-MiniLM-L6-v2)

    def validate(self) -> None:
        factor = 2 ** (len(self.channel_mults) - 1)
        if self.image_size <= 0 or self.image_size % factor:
            raise ValueError(
                f"image size {self.image_size} must be a positive multiple of {factor} "
                f"(2^(levels-1) for {len(self.channel_mults)} levels); change --image-size or the channel multipliers"
            )
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.num_classes < 1:
            raise ValueError("a conditional model needs at least one class")
        if self.cond not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning {self.cond!r}; choose one of {', '.join(CONDITIONINGS)}")


@dataclass
class DiffusionConfig:
    """The forward process and the training objective."""

    schedule: str = "linear"  # linear | cosine
    num_steps: int = 1000  # T
    loss_weighting: str = "none"  # none | min-snr (Hang et al. 2023, gamma below)
    prediction: str = "eps"  # eps | v: what the network predicts (diffusion/forward.py)
    min_snr_gamma: float = 5.0
    cond_drop_prob: float = 0.1  # classifier-free guidance: P(condition replaced by the null id) in training


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-4
    warmup_steps: int = 100
    lr_schedule: str = "constant"  # constant | cosine (decays to 0 at `steps`)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    hflip: bool = True
    balance: bool = False  # sample every class equally often (batches.BalancedBatchStream)
    precision: str = "auto"  # auto | fp32 | bf16
    log_every: int = 50
    sample_every: int = 500  # TensorBoard sample grid every N steps (0: never)
    save_every: int = 1000  # checkpoint every N steps (and at the end)
    snapshot_every: int = 500  # full training-state snapshot every N steps (and on SIGTERM/SIGINT, and at the end)
    keep_snapshots: int = 3  # snapshots kept in RUN/snapshots (the newest)


@dataclass
class DataConfig:
    source: str = "builtin:animal-shapes"
    class_names: list[str] = field(default_factory=list)
    aliases: dict[str, list[str]] = field(default_factory=dict)  # other names of a class, e.g. {"dog": ["cane"]}
    crop: str = "center"  # center | random (folders; see transforms.py)
    background: str = "white"  # what transparent pixels are composited on: white | black | gray | #rrggbb
    min_size: int = 16  # px; images with a shorter side are skipped


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """The config of a JSON object; a ValueError (one line) for anything that is not one."""
        if not isinstance(d, dict):
            raise ValueError(f"a config is a JSON object, got {type(d).__name__}")
        version = d.get("format_version", FORMAT_VERSION)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValueError(f"format_version must be a whole number, got {version!r}")
        if version > FORMAT_VERSION:
            raise ValueError(f"config format {version} is newer than this ddpm understands ({FORMAT_VERSION}); upgrade ddpm")
        return cls(
            model=_build(ModelConfig, d.get("model", {})),
            diffusion=_build(DiffusionConfig, d.get("diffusion", {})),
            train=_build(TrainConfig, d.get("train", {})),
            data=_build(DataConfig, d.get("data", {})),
            format_version=version,
        )

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        """Write config.json atomically (common.files): a crash never leaves a partial file."""
        write_text_atomic(Path(path), self.to_json() + "\n")


T = TypeVar("T")


def _build(kind: type[T], values: dict[str, Any]) -> T:
    """Instantiate a config dataclass from JSON values, restoring tuples and refusing unknown keys."""
    if not isinstance(values, dict):
        raise ValueError(f"{kind.__name__} must be a JSON object, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown {kind.__name__} keys: {sorted(unknown)}")
    kwargs = {}
    for name, value in values.items():
        default = getattr(kind(), name)
        kwargs[name] = tuple(value) if isinstance(default, tuple) else value
    return kind(**kwargs)
