"""How to draw images from a trained model: one typed `SamplingConfig` that the CLI, the Python API, evaluation,
the web UI and the training preview all take. Each option has its one default here and is validated here, once,
whether it comes from a flag, a keyword, a JSON request or a preset.

    sampler     ddpm (ancestral), ddim, dpm++2m (DPM-Solver++(2M)), dpm++2m-sde (its stochastic form). The default,
                dpm++2m at 20 steps, is the cheapest that kept the quality of 50 ancestral steps on the demo's model at
                N = 1,000 (FID, classifier FID and per-class accuracy within the paired error; docs/evaluation.md),
                in 2.5x fewer network evaluations; `ddpm sample`, `ddpm eval` and the web UI all start from it
    steps       network evaluations, evenly spaced over the T training steps; None: the sampler's default
                (DEFAULT_STEPS), at most T. `num_steps(T)` resolves it: the one place where None becomes a number.
    guidance    classifier-free guidance weight w >= 0: 0 unconditional, 1 conditional, > 1 stronger (guidance.py);
                None: the model's default, DEFAULT_GUIDANCE by what it is conditioned on (a model without a condition
                always gets 1: both branches would be equal). `guidance_for(cond)` resolves it
    eta         DDIM's noise in [0, 1] (0 deterministic, 1 DDPM-like); other samplers ignore it. Above 1, sigma^2
                exceeds 1 - alpha_bar_s on some steps and eq. 12's direction term has no real square root
    variance    the ancestral step's variance: beta_tilde (posterior) or beta (DDPM sec. 3.2)
    seed        image j of a request starts from noise seeded by (seed, j); a whole number from 0 to 2^63 - 1
    batch_size  images per network call (a batch of 2 x batch_size under guidance); results do not depend on it
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Any

from ddpm.common.errors import UserError
from ddpm.common.parse import INT64_MAX, finite


class Sampler(str, Enum):
    """The reverse-process step rules of sampler.py."""

    DDPM = "ddpm"
    DDIM = "ddim"
    DPMPP_2M = "dpm++2m"
    DPMPP_2M_SDE = "dpm++2m-sde"

    __hash__ = str.__hash__  # a name looks up what its member does: DEFAULT_STEPS["ddim"]

    @property
    def stochastic(self) -> bool:
        """Adds fresh noise at every step but the last (DDIM only when eta > 0)."""
        return self in (Sampler.DDPM, Sampler.DPMPP_2M_SDE)

    @property
    def multistep(self) -> bool:
        """Also takes the previous step's x0_hat (DPM-Solver++(2M))."""
        return self in (Sampler.DPMPP_2M, Sampler.DPMPP_2M_SDE)


class Variance(str, Enum):
    """Variance of the ancestral (ddpm) step: the posterior's beta_tilde, or beta (DDPM sec. 3.2)."""

    BETA_TILDE = "beta_tilde"
    BETA = "beta"


SAMPLERS: tuple[str, ...] = tuple(s.value for s in Sampler)
VARIANCES: tuple[str, ...] = tuple(v.value for v in Variance)
DEFAULT_STEPS: dict[Sampler, int] = {Sampler.DDPM: 50, Sampler.DDIM: 50, Sampler.DPMPP_2M: 20, Sampler.DPMPP_2M_SDE: 20}
# Guidance by conditioning. Class models: 3, measured on the demo (docs/evaluation.md). Text models: 7, measured on
# builtin:shapes-text over three training seeds, each image from its own noise: shapes follow the words more at 7
# than at 3 (held-out pairs most) with colour unchanged (docs/text.md, "Guidance for text models").
DEFAULT_GUIDANCE: dict[str, float] = {"class": 3.0, "text": 7.0}


def _member(kind: type[Enum], value: Any, what: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(m.value for m in kind)  # type: ignore[attr-defined]
        raise UserError(f"unknown {what} {value!r}: {what} must be one of {choices}") from None


def _whole(value: Any, what: str, least: int) -> int:
    """A whole number >= least that fits in int64 (numpy integers too; not bools, not floats), else a one-line
    UserError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not least <= value <= INT64_MAX:
        raise UserError(f"{what} must be a whole number >= {least}"
                        f"{' that fits in 64 bits' if isinstance(value, numbers.Integral) and value > least else ''}"
                        f", got {_shown(value)}")
    return int(value)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _real(value: Any, what: str, least: float = -math.inf, most: float = math.inf) -> float:
    """A finite number in [least, most], else a one-line UserError."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not finite(value)
            or not least <= value <= most):
        bound = (f" from {least:g} to {most:g}" if most < math.inf else "" if least == -math.inf else f" >= {least:g}")
        raise UserError(f"{what} must be a finite number{bound}, got {_shown(value)}")
    return float(value)


@dataclass(frozen=True)
class SamplingConfig:
    """Every option of a sampling run (see the module doc). Strings are accepted for the modes and become enums;
    a bad value is a one-line UserError."""

    sampler: Sampler = Sampler.DPMPP_2M
    steps: int | None = None
    guidance: float | None = None
    eta: float = 0.0
    variance: Variance = Variance.BETA_TILDE
    seed: int = 0
    batch_size: int = 64

    def __post_init__(self) -> None:
        object.__setattr__(self, "sampler", _member(Sampler, self.sampler, "sampler"))
        object.__setattr__(self, "variance", _member(Variance, self.variance, "variance"))
        if self.steps is not None:
            object.__setattr__(self, "steps", _whole(self.steps, "steps", 1))
        if self.guidance is not None:
            object.__setattr__(self, "guidance", _real(self.guidance, "guidance", 0.0))
        object.__setattr__(self, "eta", _real(self.eta, "eta", 0.0, 1.0))
        object.__setattr__(self, "seed", _whole(self.seed, "seed", 0))
        object.__setattr__(self, "batch_size", _whole(self.batch_size, "batch size", 1))

    @property
    def deterministic(self) -> bool:
        """Each image a function of its starting noise and condition alone: ddim at eta 0, or dpm++2m."""
        return self.sampler is Sampler.DPMPP_2M or (self.sampler is Sampler.DDIM and self.eta == 0)

    def num_steps(self, num_train_steps: int) -> int:
        """The steps to take with a schedule of T = num_train_steps: `steps`, or the sampler's default capped at T."""
        if self.steps is None:
            return min(DEFAULT_STEPS[self.sampler], num_train_steps)
        if self.steps > num_train_steps:
            raise UserError(f"steps {self.steps} is more than the model's {num_train_steps} diffusion steps; "
                            f"use at most {num_train_steps}")
        return self.steps

    def guidance_for(self, cond: str) -> float:
        """The guidance weight for a model conditioned on `cond` (class | text | none): `guidance`, or the default
        for that conditioning; 1 for none, whatever was asked."""
        if cond == "none":
            return 1.0
        return DEFAULT_GUIDANCE[cond] if self.guidance is None else self.guidance

    def resolved(self, num_train_steps: int, cond: str) -> "SamplingConfig":
        """This config as a model with T = num_train_steps conditioned on `cond` applies it: steps and guidance
        filled in (the one place where their None becomes a number)."""
        return replace(self, steps=self.num_steps(num_train_steps), guidance=self.guidance_for(cond))

    def with_options(self, **options: Any) -> "SamplingConfig":
        """A copy with some options changed (keyword names as the fields); an unknown name is a UserError."""
        unknown = sorted(set(options) - set(self.__dataclass_fields__))
        if unknown:
            raise UserError(f"unknown sampling option(s) {', '.join(unknown)}; known: "
                            f"{', '.join(self.__dataclass_fields__)}")
        return replace(self, **options)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the modes as their names."""
        d = asdict(self)
        d["sampler"], d["variance"] = self.sampler.value, self.variance.value
        return d


# Presets: every sampling run in ddpm starts from SamplingConfig() (`ddpm sample`, the web UI, the API) or one of these.
# `ddpm eval`: the same sampler and steps as `ddpm sample` and the web UI (one default, measured in
# docs/benchmarks.md), 100 images a call.
EVAL_SAMPLING = SamplingConfig(batch_size=100)
# TensorBoard preview grids while a run trains: cheap and deterministic (guidance: the model's default).
PREVIEW_SAMPLING = SamplingConfig(sampler=Sampler.DDIM, steps=20)
# `ddpm interpolate`: a deterministic sampler (each frame a function of its noise and condition).
INTERPOLATION_SAMPLING = SamplingConfig(sampler=Sampler.DDIM)


# The options of editing with a trained run (diffusion/editing.py), each with its one default and check here, where
# the CLI reads them without importing torch.
DEFAULT_STRENGTH = 0.6  # image to image: noised to t = strength x T; on the demo 0.5 turned 31% of cats into dogs, 0.7 74%
DEFAULT_JUMP = 5  # inpainting: RePaint's jump length j, in sampler steps (measured on the demo: docs/editing.md)
DEFAULT_REPEATS = 3  # inpainting: each stretch of j steps is denoised r times in all (1: no resampling); 5 gained nothing
MAX_REPEATS = 100
DEFAULT_FRAMES = 9  # interpolation: frames, both ends included
MAX_FRAMES = 1000


def strength_check(strength: object) -> str | None:
    """None when `strength` is an image-to-image strength (a finite number from 0 to 1), else what was expected."""
    ok = isinstance(strength, numbers.Real) and not isinstance(strength, bool) and 0 <= strength <= 1
    return None if ok else "a strength from 0 (the input unchanged) to 1 (plain sampling)"


def check_strength(strength: object) -> float:
    """`strength` as a float, or a one-line UserError."""
    if strength_check(strength):
        raise UserError(f"strength must be {strength_check(strength)}, got {_shown(strength)}")
    return float(strength)  # type: ignore[arg-type]


def jump_check(jump: object) -> str | None:
    ok = isinstance(jump, numbers.Integral) and not isinstance(jump, bool) and 1 <= jump <= INT64_MAX
    return None if ok else "a jump length of at least 1 sampler step"


def repeats_check(repeats: object) -> str | None:
    ok = isinstance(repeats, numbers.Integral) and not isinstance(repeats, bool) and 1 <= repeats <= MAX_REPEATS
    return None if ok else f"a number of repeats from 1 (no resampling) to {MAX_REPEATS}"


def frames_check(frames: object) -> str | None:
    ok = isinstance(frames, numbers.Integral) and not isinstance(frames, bool) and 2 <= frames <= MAX_FRAMES
    return None if ok else f"a number of frames from 2 to {MAX_FRAMES}"
