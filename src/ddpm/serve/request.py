"""A generation request from the web UI, checked field by field: a bad one gives a one-line UserError (HTTP 400)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ddpm.common.errors import UserError
from ddpm.diffusion.sampler import SAMPLERS

MAX_SEED = 2**63 - 1  # per-image seeds are mixed from (seed, j) by numpy's SeedSequence: non-negative integers


@dataclass(frozen=True)
class Limits:
    """What a request may ask for. max_steps is the run's number of diffusion steps T (the samplers' limit)."""

    max_steps: int
    max_images: int = 64
    max_prompt_chars: int = 200
    max_guidance: float = 20.0


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    negative: str = ""
    n: int = 4
    sampler: str = "ddpm"  # as `ddpm sample`: the same seed gives the same images
    steps: int = 50
    guidance: float = 3.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULTS = GenerateRequest(prompt="")


def parse_request(payload: Any, limits: Limits) -> GenerateRequest:
    """A JSON object -> GenerateRequest. Missing fields take DEFAULTS (prompt is required); unknown fields, wrong
    types and values out of range are refused with a message naming the field and what it accepts."""
    if not isinstance(payload, dict):
        raise UserError("the request must be a JSON object such as {\"prompt\": \"cat\", \"n\": 4}")
    known = set(DEFAULTS.to_dict())
    unknown = sorted(set(payload) - known)
    if unknown:
        raise UserError(f"unknown field(s) {', '.join(unknown)}; expected {', '.join(DEFAULTS.to_dict())}")
    prompt = _text(payload, "prompt", limits.max_prompt_chars)
    if not prompt:
        raise UserError("prompt is empty: name what to draw (a class name such as 'cat', or its index)")
    sampler = payload.get("sampler", DEFAULTS.sampler)
    if sampler not in SAMPLERS:
        raise UserError(f"sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
    default_steps = min(DEFAULTS.steps, limits.max_steps)
    return GenerateRequest(
        prompt=prompt,
        negative=_text(payload, "negative", limits.max_prompt_chars),
        n=_integer(payload, "n", DEFAULTS.n, 1, limits.max_images),
        sampler=sampler,
        steps=_integer(payload, "steps", default_steps, 1, limits.max_steps),
        guidance=_number(payload, "guidance", DEFAULTS.guidance, 0.0, limits.max_guidance),
        seed=_integer(payload, "seed", DEFAULTS.seed, 0, MAX_SEED),
    )


def _text(payload: dict, name: str, max_chars: int) -> str:
    value = payload.get(name, "")
    if not isinstance(value, str):
        raise UserError(f"{name} must be text, got {type(value).__name__}")
    value = value.strip()
    if len(value) > max_chars:
        raise UserError(f"{name} is {len(value)} characters long; at most {max_chars} are allowed")
    return value


def _integer(payload: dict, name: str, default: int, lo: int, hi: int) -> int:
    value = payload.get(name, default)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be a whole number from {lo} to {hi}, got {value!r}")
    if not lo <= value <= hi:
        raise UserError(f"{name} must be from {lo} to {hi}, got {value}")
    return value


def _number(payload: dict, name: str, default: float, lo: float, hi: float) -> float:
    value = payload.get(name, default)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN fails value == value
        raise UserError(f"{name} must be a number from {lo:g} to {hi:g}, got {value!r}")
    if not lo <= value <= hi:
        raise UserError(f"{name} must be from {lo:g} to {hi:g}, got {value:g}")
    return float(value)
