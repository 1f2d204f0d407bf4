"""A generation request from the web UI, checked field by field: a bad one gives a one-line UserError (HTTP 400)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ddpm.common.errors import UserError
from ddpm.common.ostext import as_text
from ddpm.common.parse import ascii_integer, ascii_real, finite
from ddpm.diffusion.sampling import SamplingConfig

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
    sampling: SamplingConfig = SamplingConfig()  # as `ddpm sample`: the same seed gives the same images

    def to_dict(self) -> dict[str, Any]:
        """The request as the page sends it: its fields and the sampling options it may set."""
        options = self.sampling.to_dict()
        return {"prompt": self.prompt, "negative": self.negative, "n": self.n, **{k: options[k] for k in SAMPLING_FIELDS}}


SAMPLING_FIELDS = ("sampler", "steps", "guidance", "seed")  # what a request may set; the rest keeps its default
FIELDS = ("prompt", "negative", "n", *SAMPLING_FIELDS)


def request_defaults(limits: Limits) -> dict[str, Any]:
    """What the page starts with: every field's default, steps resolved for the run's T."""
    return GenerateRequest("", sampling=SamplingConfig().resolved(limits.max_steps)).to_dict()


def parse_request(payload: Any, limits: Limits) -> GenerateRequest:
    """A JSON object -> GenerateRequest. Missing fields take their defaults (prompt is required); unknown fields, wrong
    types and values out of range are refused with a message naming the field and what it accepts."""
    if not isinstance(payload, dict):
        raise UserError("the request must be a JSON object such as {\"prompt\": \"cat\", \"n\": 4}")
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        named = ", ".join(repr(as_text(str(k))[:40]) for k in unknown[:5])  # one line whatever the names hold
        raise UserError(f"unknown field(s) {named}; expected {', '.join(FIELDS)}")
    prompt = _text(payload, "prompt", limits.max_prompt_chars)
    if not prompt:
        raise UserError("prompt is empty: name what to draw (a class name such as 'cat', or its index)")
    chosen = SamplingConfig(sampler=payload.get("sampler", SamplingConfig.sampler))  # the sampler's own defaults
    n = _integer(payload, "n", GenerateRequest.n, 1, limits.max_images)
    sampling = replace(
        chosen,
        steps=_integer(payload, "steps", chosen.num_steps(limits.max_steps), 1, limits.max_steps),
        guidance=_number(payload, "guidance", chosen.guidance, 0.0, limits.max_guidance),
        seed=_integer(payload, "seed", chosen.seed, 0, MAX_SEED),
        batch_size=n,  # one batch: the progress bar's steps are the sampler's steps
    )
    return GenerateRequest(prompt=prompt, negative=_text(payload, "negative", limits.max_prompt_chars), n=n,
                           sampling=sampling)


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
    if isinstance(value, str) and ascii_integer(value) is not None:
        value = ascii_integer(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be a whole number from {lo} to {hi}, got {repr(value)[:40]}")
    if not lo <= value <= hi:
        raise UserError(f"{name} must be from {lo} to {hi}, got {value}")
    return value


def _number(payload: dict, name: str, default: float, lo: float, hi: float) -> float:
    value = payload.get(name, default)
    if isinstance(value, str) and ascii_real(value) is not None:  # ASCII notation only, as everywhere in ddpm
        value = ascii_real(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not finite(value):  # nan, inf, 10**400
        raise UserError(f"{name} must be a number from {lo:g} to {hi:g}, got {repr(value)[:40]}")
    if not lo <= value <= hi:
        raise UserError(f"{name} must be from {lo:g} to {hi:g}, got {float(value):g}")
    return float(value)
