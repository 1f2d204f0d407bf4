"""Typed configuration of a run: one `RunConfig` is written beside the outputs and inside every checkpoint,
so a run can be rebuilt from its directory alone (no flags needed to sample)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from ddpm.common.files import write_text_atomic
from ddpm.common.ostext import as_text
from ddpm.common.parse import INT64_MAX, finite, json_value

FORMAT_VERSION = 7  # 2: the measured recipe became the default (cosine, v, min-SNR, cosine LR, power EMA);
# 3: text models attend to the caption's token states (model.text_tokens); 4: their cross-attention queries carry
# their place in the picture (model.cross_positions); 5: with tokens, the sentence embedding no longer conditions by
# FiLM (model.sentence_film), and text models train with a min-SNR floor (resolve.py; docs/text.md); 6: each clause
# of a caption is encoded on its own (model.text_clauses; text/condition.py); 7: each clause's BERT positions continue
# where the previous clause ended (model.clause_positions)
CONFIG_NAME = "config.json"  # the RunConfig in a run directory
CONDITIONINGS = ("class", "text", "none")
SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v")
LOSS_WEIGHTINGS = ("none", "min-snr", "trunc-min-snr")
LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CROPS = ("center", "random")
LOGGERS = ("tensorboard", "wandb", "none")  # wandb: TensorBoard and Weights & Biases (training/metrics.py)
MAX_TIMESTEPS = 100_000  # the most diffusion steps T a schedule may have
# Upper bounds of the model's shape: far above any model trained in pixel space (ADM at 512 px: 256 base channels,
# multipliers up to 4, 2-3 blocks per level, 1,000 classes), low enough that a mistyped or crafted value (10**12
# residual blocks, a layer 10**18 channels wide) is a one-line error instead of a loop that never ends or an
# allocation that fails with a traceback. Every other whole number is bounded by int64 (what a tensor holds).
MAX_IMAGE_SIZE = 8192  # px: the side of the largest image data/transforms.py decodes (2**26 pixels)
MAX_CHANNELS = 8192  # base channels
MAX_MULTIPLIER = 64  # a level's width is base channels x its multiplier
MAX_LEVELS = 13  # resolution levels: 8192 px halved 12 times is 2 px
MAX_RES_BLOCKS = 64  # per level
MAX_HEADS = 1024
MAX_CLASSES = 1_000_000
MAX_TEXT_TOKENS = 256  # the text encoder reads at most 256 tokens (text/encoder.py)

# What an older config.json meant by a key it does not hold: the defaults of its format. Format 1 (before the recipe
# became the default): every writer wrote all its keys, so its entries matter only for files written by hand, and
# format-1 files hold ema_decay (a fixed decay). Formats 1 and 2 had no text_tokens: their text models read the
# sentence embedding only. Formats 1-3 had no cross_positions: their queries had no position code. Formats 1-4 had
# no sentence_film: a text model fed its sentence embedding by FiLM; nor min_snr_floor: none trained with a floor
# (named here so that `ddpm train --config OLD/config.json`, or resuming an old run, keeps it off). Formats 1-5 had
# no text_clauses: a caption was encoded as one sentence. Format 6 had no clause_positions: each clause started again
# at position 0.
LEGACY_DEFAULTS = {1: {"diffusion": {"schedule": "linear", "prediction": "eps", "loss_weighting": "none", "min_snr_floor": 0.0},
                       "train": {"lr": 2e-4, "warmup_steps": 100, "lr_schedule": "constant", "ema_decay": 0.999},
                       "model": {"text_tokens": 0, "cross_positions": False, "sentence_film": True, "text_clauses": False,
                                 "clause_positions": False}},
                   2: {"model": {"text_tokens": 0, "cross_positions": False, "sentence_film": True, "text_clauses": False,
                                 "clause_positions": False},
                       "diffusion": {"min_snr_floor": 0.0}},
                   3: {"model": {"cross_positions": False, "sentence_film": True, "text_clauses": False,
                                 "clause_positions": False},
                       "diffusion": {"min_snr_floor": 0.0}},
                   4: {"model": {"sentence_film": True, "text_clauses": False, "clause_positions": False},
                       "diffusion": {"min_snr_floor": 0.0}},
                   5: {"model": {"text_clauses": False, "clause_positions": False}},
                   6: {"model": {"clause_positions": False}}}


# ---- one check per field: (value) -> None, or what was expected. Used for config files, flags and the API alike.
Check = Callable[[Any], "str | None"]


def _whole(lo: int, hi: int | None = None) -> Check:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and lo <= v <= (INT64_MAX if hi is None else hi)
        if ok:
            return None
        if hi is None:  # the int64 bound is named only to the one who crossed it
            return f"a whole number >= {lo}" + (" that fits in 64 bits" if isinstance(v, int) and v > lo else "")
        return f"a whole number from {lo:,} to {hi:,}"
    return check


def _real(lo: float, hi: float | None = None, open_lo: bool = False, open_hi: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not finite(v):
            ok = False
        else:
            ok = (v > lo if open_lo else v >= lo) and (hi is None or (v < hi if open_hi else v <= hi))
        if ok:
            return None
        if hi is None:
            return f"a number {'>' if open_lo else '>='} {lo}"
        return f"a number in {'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}"
    return check


def _choice(*options: Any) -> Check:
    return lambda v: None if v in options and not isinstance(v, bool) else "one of " + ", ".join(map(str, options))


def _flag(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def _source(v: Any) -> str | None:
    ok = isinstance(v, str) and v.strip() != "" and "\0" not in v  # "" would read the current folder
    return None if ok else "builtin:animal-shapes, builtin:shapes-text or the path of a folder"


def _path_or_empty(v: Any) -> str | None:
    ok = isinstance(v, str) and "\0" not in v
    return None if ok else "a file path, or empty for none"


def _whole_list(allow_empty: bool, hi: int, longest: int) -> Check:
    def check(v: Any) -> str | None:
        ok = (isinstance(v, (list, tuple)) and (allow_empty or len(v) > 0) and len(v) <= longest
              and all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= hi for x in v))
        return None if ok else (f"a list of at most {longest} whole numbers from 1 to {hi:,}"
                                + ("" if allow_empty else " (at least one)"))
    return check


def _optional(check: Check) -> Check:
    return lambda v: None if v is None else check(v)


BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}


def parse_background(name: str) -> tuple[int, int, int]:
    """'white' | 'black' | 'gray' | '#rrggbb' -> an RGB triple; ValueError otherwise."""
    if name in BACKGROUNDS:
        return BACKGROUNDS[name]
    if len(name) == 7 and name.startswith("#") and all(c in "0123456789abcdefABCDEF" for c in name[1:]):
        return (int(name[1:3], 16), int(name[3:5], 16), int(name[5:7], 16))
    raise ValueError(f"unknown background {name!r}; use white, black, gray or #rrggbb")


def _background(v: Any) -> str | None:
    try:
        parse_background(v) if isinstance(v, str) else None
    except ValueError:
        return "white, black, gray or #rrggbb"
    return None if isinstance(v, str) else "white, black, gray or #rrggbb"


def _names(v: Any) -> str | None:
    return None if isinstance(v, list) and all(isinstance(x, str) for x in v) else "a list of strings"


def _aliases(v: Any) -> str | None:
    ok = isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, list) and all(isinstance(a, str) for a in x)
                                     for k, x in v.items())
    return None if ok else "a table of lists of strings"


def with_format_defaults(d: dict[str, Any], version: int) -> dict[str, Any]:
    """A config table of format `version` with the keys that format left out filled by what it meant by them
    (LEGACY_DEFAULTS); a section that is not a table is left as it is, for the caller's check."""
    legacy = LEGACY_DEFAULTS.get(version, {})
    return {**d, **{name: {**keys, **d.get(name, {})} for name, keys in legacy.items()
                    if isinstance(d.get(name, {}), dict)}}


def spec(default: Any, check: Check, **kw: Any) -> Any:
    """A config field with its one check (dataclasses.field with metadata)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"check": check}, **kw)
    return field(default=default, metadata={"check": check}, **kw)


@dataclass
class ModelConfig:
    """Shape of the conditional UNet (see network/unet.py). The defaults are the `small` preset at 32 px, grey;
    `ddpm train` takes the preset and the image shape from the data (presets.py, resolve.py)."""

    image_size: int = spec(32, _whole(1, MAX_IMAGE_SIZE))
    channels: int = spec(1, _choice(1, 3))  # 1 (grayscale) or 3 (RGB)
    base_channels: int = spec(64, _whole(1, MAX_CHANNELS))
    channel_mults: tuple[int, ...] = spec((1, 2, 2), _whole_list(False, MAX_MULTIPLIER, MAX_LEVELS))  # one per level
    num_res_blocks: int = spec(2, _whole(1, MAX_RES_BLOCKS))
    attention_resolutions: tuple[int, ...] = spec((8,), _whole_list(True, MAX_IMAGE_SIZE, MAX_LEVELS))  # px, attention
    num_heads: int = spec(4, _whole(1, MAX_HEADS))
    dropout: float = spec(0.0, _real(0, 1, open_hi=True))
    num_classes: int = spec(10, _whole(1, MAX_CLASSES))  # the class embedding has num_classes + 1 rows; the last: null
    checkpointing: bool = spec(False, _flag)  # recompute each block's activations in backward: less memory
    cond: str = spec("class", _choice(*CONDITIONINGS))  # class ids | sentence embeddings (text_dim) | none
    text_dim: int = spec(384, _whole(1, MAX_CHANNELS))  # width of the frozen text encoder's embeddings (all-MiniLM-L6-v2)
    # cond "text": cross-attention over the caption's first text_tokens token states (0: the sentence embedding only)
    text_tokens: int = spec(32, _whole(0, MAX_TEXT_TOKENS))
    # with text_tokens: the cross-attention queries get a fixed 2D position code (network/layers.position_code)
    cross_positions: bool = spec(True, _flag)
    # with text_tokens: the sentence embedding also conditions every block by FiLM (formats 3-4). Off since format 5:
    # it hands the UNet the caption's colours without their places, and two-object scenes drew them swapped
    sentence_film: bool = spec(False, _flag)
    # with text_tokens: a caption's clauses ("a red circle" | "above a blue square") are encoded one by one and their
    # token states concatenated, so no word's state mixes in the other object's words (format 6; text/condition.py)
    text_clauses: bool = spec(True, _flag)
    # with text_clauses: each clause's BERT position ids continue where the previous clause ended, so a clause's
    # states still say where in the caption it stands (format 7; format 6 started every clause at 0)
    clause_positions: bool = spec(True, _flag)

    def validate(self) -> None:
        check_section(self)
        factor = 2 ** (len(self.channel_mults) - 1)
        if self.image_size % factor:
            raise ValueError(
                f"image size {self.image_size} must be a positive multiple of {factor} "
                f"(2^(levels-1) for {len(self.channel_mults)} levels); change --image-size or the channel multipliers"
            )


@dataclass
class DiffusionConfig:
    """The forward process and the training objective."""

    schedule: str = spec("cosine", _choice(*SCHEDULES))
    num_steps: int = spec(1000, _whole(1, MAX_TIMESTEPS))  # T
    loss_weighting: str = spec("min-snr", _choice(*LOSS_WEIGHTINGS))  # min-snr: Hang et al. 2023, gamma below
    prediction: str = spec("v", _choice(*PREDICTIONS))  # what the network predicts (diffusion/forward.py)
    min_snr_gamma: float = spec(5.0, _real(0, open_lo=True))
    # min-snr: w_x0 = clip(SNR, floor, gamma); a floor > 0 trains the highest-noise steps (v only). 5 and 0 here;
    # `ddpm train` gives text models with v-prediction TEXT_MIN_SNR_FLOOR (resolve.py) since format 5 and
    # TEXT_MIN_SNR_GAMMA since 2026-12-07 (every config.json holds its gamma, so older runs keep theirs)
    min_snr_floor: float = spec(0.0, _real(0))
    cond_drop_prob: float = spec(0.1, _real(0, 1))  # classifier-free guidance: P(condition -> null) in training

    def validate(self) -> None:
        """The rule between fields (each field's own check is its spec's)."""
        if x0_weight_floor(self.loss_weighting, self.min_snr_floor) > 0 and self.prediction != "v":
            raise ValueError(floor_needs_v(self.loss_weighting))


TEXT_MIN_SNR_FLOOR = 0.05  # measured on builtin:shapes-text (docs/text.md, "When the colours are placed")
TEXT_MIN_SNR_GAMMA = 2.0  # the same: less weight on the fine detail of low noise, so the shapes come sooner
# (docs/text.md, "Less weight on fine detail")
TEXT_LR_SCALE = 0.7  # text models train at this share of the preset's learning rate (tiny: 2e-3 -> 1.4e-3), given by
# `ddpm train` unless --lr is (resolve.py; docs/text.md, "A lower learning rate for text models")


def x0_weight_floor(weighting: str, floor: float) -> float:
    """The least weight a loss weighting puts on the x0 error (diffusion/forward.loss_weights): min-snr's floor,
    at least 1 for trunc-min-snr, 0 for none (whose weight is not a clip of SNR)."""
    if weighting == "trunc-min-snr":
        return max(floor, 1.0)
    return floor if weighting == "min-snr" else 0.0


def floor_needs_v(weighting: str) -> str:
    """The one message for a floored loss weighting on eps (config validation and diffusion/forward.py)."""
    what = "loss weighting trunc-min-snr" if weighting == "trunc-min-snr" else "a min-SNR floor above 0"
    return (f"{what} needs prediction v (on eps its weight has no bound at high noise); "
            "use --prediction v" + ("" if weighting == "trunc-min-snr" else " or --min-snr-floor 0"))


@dataclass
class TrainConfig:
    steps: int = spec(2000, _whole(1))
    batch_size: int = spec(64, _whole(1))  # per rank and micro-batch; the global batch is x ranks x grad_accum
    grad_accum: int = spec(1, _whole(1))  # micro-batches per optimiser step
    lr: float = spec(1e-3, _real(0, open_lo=True))
    warmup_steps: int | None = spec(None, _optional(_whole(0)))  # None: warmup() = min(1000, steps // 20)
    lr_schedule: str = spec("cosine", _choice(*LR_SCHEDULES))  # constant | cosine (decays to 0 at `steps`)
    weight_decay: float = spec(0.0, _real(0))
    grad_clip: float = spec(1.0, _real(0))  # max gradient norm; 0: off
    ema_decay: float | None = spec(None, _optional(_real(0, 1, open_hi=True)))  # a fixed decay instead of the power EMA
    ema_rel_std: float = spec(0.1, _real(0, 0.28, open_lo=True))  # power EMA width, a fraction of the training so far
    seed: int = spec(0, _whole(0))
    hflip: bool = spec(True, _flag)
    balance: bool = spec(False, _flag)  # sample every class equally often (batches.BalancedBatchStream)
    precision: str = spec("auto", _choice(*PRECISIONS))  # auto: runtime/device.resolve_precision
    threads: int = spec(0, _whole(0))  # CPU threads for training (0: torch's default, all cores)
    log_every: int = spec(50, _whole(1))
    log: str = spec("tensorboard", _choice(*LOGGERS))  # where curves and grids go beside metrics.jsonl
    sample_every: int = spec(500, _whole(0))  # RUN/samples/step-N.png and TensorBoard grid every N steps (0: never)
    eval_every: int = spec(0, _whole(0))  # measure quality every N steps, keep best.safetensors (0: never)
    eval_samples: int = spec(0, _whole(0))  # images per such evaluation (0: sized to ~10% of the training time)
    eval_classifier: str = spec("", _path_or_empty)  # a domain classifier file: per-class accuracy in those evaluations
    save_every: int = spec(1000, _whole(0))  # checkpoint every N steps (and at the end)
    snapshot_every: int = spec(500, _whole(0))  # full training-state snapshot every N steps (and on signals, end)
    keep_snapshots: int = spec(3, _whole(1))  # snapshots kept in RUN/snapshots (the newest)

    def warmup(self) -> int:
        """Linear LR warm-up steps: the set value, else 5% of the run up to 1,000 (50 for the demo's 1,000 steps,
        1,000 from 20,000 steps on)."""
        return self.warmup_steps if self.warmup_steps is not None else min(1000, self.steps // 20)


OPERATIONAL = ("precision", "threads", "log_every", "log", "sample_every", "save_every", "snapshot_every", "keep_snapshots",
               "eval_every", "eval_samples", "eval_classifier")


def same_training(a: TrainConfig, b: TrainConfig) -> bool:
    """Whether two training settings train the same model: all fields but how it runs and logs (OPERATIONAL)."""
    return all(getattr(a, f.name) == getattr(b, f.name) for f in dataclasses.fields(TrainConfig)
               if f.name not in OPERATIONAL)


@dataclass
class DataConfig:
    source: str = spec("builtin:animal-shapes", _source)
    class_names: list[str] = spec([], _names)
    aliases: dict[str, list[str]] = spec({}, _aliases)  # other names of a class, e.g. {"dog": ["cane"]}
    crop: str = spec("center", _choice(*CROPS))  # center | random (folders; see data/transforms.py)
    background: str = spec("white", _background)  # under transparent pixels: white | black | gray | #rrggbb
    min_size: int = spec(16, _whole(1))  # px; images with a shorter side are skipped


SECTIONS: dict[str, type] = {"model": ModelConfig, "diffusion": DiffusionConfig, "train": TrainConfig,
                             "data": DataConfig}


def check_value(section: str, name: str, value: Any) -> str | None:
    """None when `value` is valid for config key section.name, else a one-line reason naming the key."""
    kind = SECTIONS.get(section)
    if kind is None:
        return f"unknown section {section!r}; the sections are {', '.join(SECTIONS)}"
    if name not in {f.name for f in dataclasses.fields(kind)}:
        return f"unknown key {section}.{as_text(str(name))}"  # as_text: a key with a line break stays one line
    expected = field_check(section, name)(value)
    return None if expected is None else f"{section}.{name} must be {expected}, got {_shown(value)}"


def field_check(section: str, name: str) -> Check:
    """The one check of config key section.name: (value) -> None, or what was expected ("a whole number >= 1").
    Also the check of every other flag that means the same thing (`ddpm noise --image-size` is model.image_size)."""
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}[name].metadata["check"]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_section(obj: Any) -> None:
    """Raise ValueError (one line) for the first field of a config section whose value fails its check."""
    section = next(k for k, v in SECTIONS.items() if isinstance(obj, v))
    for f in dataclasses.fields(obj):
        error = check_value(section, f.name, getattr(obj, f.name))
        if error:
            raise ValueError(error)


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
        """The config of a JSON/TOML object; a ValueError (one line, naming the key) for anything that is not one.
        A key left out takes the default of the file's format (LEGACY_DEFAULTS for format 1, so a run trained
        before the recipe became the default is rebuilt exactly as it was trained)."""
        if not isinstance(d, dict):
            raise ValueError(f"a config is a table of sections, got {type(d).__name__}")
        version = d.get("format_version", FORMAT_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"format_version must be a whole number >= 1, got {version!r}")
        if version > FORMAT_VERSION:
            raise ValueError(f"config format {version} is newer than this ddpm understands ({FORMAT_VERSION}); upgrade ddpm")
        unknown = sorted(set(d) - set(SECTIONS) - {"format_version"})
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}; the sections are {', '.join(SECTIONS)}")
        for name in SECTIONS:
            if not isinstance(d.get(name, {}), dict):
                raise ValueError(f"{name} must be a table of keys, got {type(d[name]).__name__}")
        filled = with_format_defaults(d, version)
        sections = {name: _build(kind, name, filled.get(name, {})) for name, kind in SECTIONS.items()}
        config = cls(**sections, format_version=version)
        config.model.validate()
        config.diffusion.validate()
        return config

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        return cls.from_dict(json_value(Path(path).read_text()))

    def validate(self) -> None:
        """Every field's check, then the model's shape rule and the diffusion's; a ValueError (one line) for the first
        failure."""
        for section in SECTIONS:
            check_section(getattr(self, section))
        self.model.validate()
        self.diffusion.validate()

    def save(self, path: str | Path) -> None:
        """Write config.json atomically (common.files): a crash never leaves a partial file."""
        write_text_atomic(Path(path), self.to_json() + "\n")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The nested table of a `--config` file: TOML (tomllib) for .toml, JSON otherwise (a run's config.json is
    one). Unreadable files and syntax errors are a ValueError of one line naming the file; keys are checked later."""
    import tomllib

    p = Path(path).expanduser()
    try:
        text = p.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else ("not UTF-8 text" if isinstance(
            e, UnicodeDecodeError) else str(e))
        raise ValueError(f"{p}: cannot read the config file ({reason})") from None
    try:
        table = tomllib.loads(text) if p.suffix.lower() == ".toml" else json_value(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as e:  # RecursionError: TOML nested too deeply
        kind = "TOML" if p.suffix.lower() == ".toml" else "JSON"
        raise ValueError(f"{p}: not valid {kind} ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(table, dict):
        raise ValueError(f"{p}: a config file holds a table of sections (model, diffusion, train, data)")
    return table


T = TypeVar("T")


def _build(kind: type[T], section: str, values: dict[str, Any]) -> T:
    """A config section from its values: each checked (check_value), lists made tuples where the field is one."""
    kwargs = {}
    for name, value in values.items():
        error = check_value(section, name, value)
        if error:
            raise ValueError(error)
        default = getattr(kind(), name)
        kwargs[name] = tuple(value) if isinstance(default, tuple) else value
    return kind(**kwargs)
