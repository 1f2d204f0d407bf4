"""A request from the web UI (generate, or edit or inpaint an uploaded image), checked field by field: a bad one
gives a one-line UserError (HTTP 400)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace
from typing import Any

from ddpm.common.errors import UserError
from ddpm.common.ostext import as_text
from ddpm.common.parse import ascii_integer, ascii_real, finite
from ddpm.diffusion.sampling import DEFAULT_STRENGTH, SamplingConfig

MAX_SEED = 2**63 - 1  # per-image seeds are mixed from (seed, j) by numpy's SeedSequence: non-negative integers


@dataclass(frozen=True)
class Limits:
    """What a request may ask for. max_steps is the run's number of diffusion steps T (the samplers' limit); cond
    what the run is conditioned on (class | text | none), which sets the default guidance."""

    max_steps: int
    cond: str = "class"
    max_images: int = 64
    max_prompt_chars: int = 200
    max_guidance: float = 20.0
    max_upload_bytes: int = 16 * 2**20  # an uploaded image or mask (data/transforms.open_image bounds its pixels)


MODES = ("generate", "edit", "inpaint")  # sample; image to image (SDEdit); inpainting (RePaint)


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    negative: str = ""
    n: int = 4
    sampling: SamplingConfig = SamplingConfig()  # as `ddpm sample`: the same seed gives the same images
    mode: str = "generate"
    strength: float = DEFAULT_STRENGTH  # edit
    image: bytes | None = None  # edit, inpaint: the uploaded file's bytes
    mask: bytes | None = None  # inpaint: white = generate

    def to_dict(self) -> dict[str, Any]:
        """The request as the page sends it: its fields and the sampling options it may set (not the uploads)."""
        options = self.sampling.to_dict()
        return {"prompt": self.prompt, "negative": self.negative, "n": self.n, "mode": self.mode,
                "strength": self.strength, **{k: options[k] for k in SAMPLING_FIELDS}}


SAMPLING_FIELDS = ("sampler", "steps", "guidance", "seed")  # what a request may set; the rest keeps its default
FIELDS = ("prompt", "negative", "n", *SAMPLING_FIELDS, "mode", "strength", "image", "mask")


def request_defaults(limits: Limits) -> dict[str, Any]:
    """What the page starts with: every field's default, steps and guidance resolved for the run."""
    return GenerateRequest("", sampling=SamplingConfig().resolved(limits.max_steps, limits.cond)).to_dict()


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
        guidance=_number(payload, "guidance", chosen.guidance_for(limits.cond), 0.0, limits.max_guidance),
        seed=_integer(payload, "seed", chosen.seed, 0, MAX_SEED),
        batch_size=n,  # one batch: the progress bar's steps are the sampler's steps
    )
    mode = payload.get("mode", GenerateRequest.mode)
    if mode not in MODES:
        raise UserError(f"mode must be one of {', '.join(MODES)}, got {repr(mode)[:40]}")
    strength = _number(payload, "strength", GenerateRequest.strength, 0.0, 1.0)
    image = _upload(payload, "image", limits.max_upload_bytes) if mode != "generate" else None
    mask = _upload(payload, "mask", limits.max_upload_bytes) if mode == "inpaint" else None
    return GenerateRequest(prompt=prompt, negative=_text(payload, "negative", limits.max_prompt_chars), n=n,
                           sampling=sampling, mode=mode, strength=strength, image=image, mask=mask)


def _upload(payload: dict, name: str, max_bytes: int) -> bytes:
    """A file sent as base64 text, bare or as a data: URL ("data:image/png;base64,..."); its bytes."""
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise UserError(f"{name} is missing: upload an image file (a data: URL or base64 text)")
    text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    if len(text) > 4 * (max_bytes // 3 + 1):
        raise UserError(f"{name} is larger than {max_bytes // 2**20} MiB; send a smaller file")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UserError(f"{name} is not base64 text (a data: URL or base64 of the file)") from None


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
