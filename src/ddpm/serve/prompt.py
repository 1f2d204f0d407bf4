"""The one place where the web UI's prompt and negative prompt become conditioning for the model.

The same rules as `ddpm sample` (TrainedModel.resolve_prompts): a class-conditioned run takes exact class names,
aliases (Animals-10's Italian folder names) and indices, then maps any other text to the nearest class by sentence
similarity; a text-conditioned run encodes the prompt. Where the command line would warn about a prompt far from
everything the model knows and draw the nearest class anyway, the web UI refuses it with the nearest classes named
(a page is not a log). A negative prompt replaces the unconditional branch of guidance,
eps = eps_neg + w (eps_cond - eps_neg) (diffusion/guidance.NegativeAsNull).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ddpm.api import TrainedModel
from ddpm.common.errors import UserError
from ddpm.text.prompts import FarPrompt


@dataclass(frozen=True)
class Conditioning:
    """What to draw: the prompt's condition, a class id () or a text embedding (D,), and with a negative prompt the
    condition to guide away from."""

    cond: torch.Tensor
    label: str  # the class drawn (class runs) or the prompt (text runs)
    negative: torch.Tensor | None = None
    negative_label: str | None = None
    similarity: float | None = None  # of the prompt to the class it was mapped to (class runs)


def resolve_request(run: TrainedModel, prompt: str, negative: str = "") -> Conditioning:
    """prompt (and optional negative prompt) -> Conditioning; a UserError with a one-line message naming the nearest
    classes (or training captions) when the prompt is far from all of them."""
    if run.conditioning == "none":
        raise UserError("this model is unconditional (trained with --cond none): it takes no prompt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FarPrompt)
        cond, (row,) = run.resolve_prompts([prompt])
    if row.far:
        near = ", ".join(f"{n} ({s:.2f})" for n, s in row.nearest)
        raise UserError(f"{prompt.strip()!r} is far from everything this model knows; nearest: {near}. "
                        f"It draws: {', '.join(run.class_names) if run.conditioning == 'class' else 'its training captions'}")
    if not negative.strip():
        return Conditioning(cond[0], row.label, similarity=row.similarity)
    neg, neg_row = run.resolve_negative(negative, drawn=[row])
    return Conditioning(cond[0], row.label, neg, neg_row.label, row.similarity)
