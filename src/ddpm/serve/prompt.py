"""The one place where the web UI's prompt and negative prompt become conditioning for the model.

Today the model is class-conditional: a prompt is a class name, an alias (Animals-10's Italian folder names) or an
index, resolved by `ddpm.api.resolve_class`. A negative prompt is a class too: sampling then guides away from it,
eps = eps_neg + w (eps_cond - eps_neg), instead of away from the unconditional prediction (guidance.py). When runs
gain text conditioning, this function is where a prompt becomes a text embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..api import TrainedModel, resolve_class
from ..errors import UserError


@dataclass(frozen=True)
class Conditioning:
    """What to draw: the class id of the prompt and, with a negative prompt, the class id to guide away from."""

    class_id: int
    negative_id: int | None
    label: str  # the class name, as the run knows it
    negative_label: str | None = None


def resolve_request(run: TrainedModel, prompt: str, negative: str = "") -> Conditioning:
    """prompt (and optional negative prompt) -> Conditioning; UserError with a one-line message listing the known
    classes when either names no class of the run."""
    class_id = resolve_class(prompt, run.class_names, run.config.data.aliases)
    if not negative.strip():
        return Conditioning(class_id, None, run.class_names[class_id])
    try:
        negative_id = resolve_class(negative, run.class_names, run.config.data.aliases)
    except UserError as e:
        raise UserError(f"negative prompt: {e}") from None
    if negative_id == class_id:
        raise UserError(f"the negative prompt names the same class as the prompt ({run.class_names[class_id]}); "
                        "leave it empty or name another class")
    return Conditioning(class_id, negative_id, run.class_names[class_id], run.class_names[negative_id])
