"""Classifier-free guidance (Ho & Salimans 2022).

Training: each sample's condition is replaced by the null id with probability p, so one network learns both
eps(x, t, c) and eps(x, t, null).
Sampling: eps_hat = eps_uncond + w (eps_cond - eps_uncond).
    With a negative prompt the unconditional branch is replaced by the negative condition:
    eps_hat = eps_neg + w (eps_cond - eps_neg)  (`NegativeAsNull`).
    w = 0: the unconditional model (the class is ignored);
    w = 1: the plain conditional model (no guidance);
    w > 1: extrapolates away from the unconditional prediction: more typical, less diverse samples.
"""

from __future__ import annotations

import torch

from ddpm.diffusion.forward import EpsModel


def drop_condition(cond: torch.Tensor, null_id: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each sample of cond, (B,) class ids or (B, D) embeddings, by null_id with probability p (one draw
    per sample)."""
    if p <= 0:
        return cond
    drop = torch.rand(cond.shape[:1], generator=generator) < p  # (B,)
    drop = drop.view(-1, *[1] * (cond.dim() - 1)).to(cond.device)
    return torch.where(drop, torch.full_like(cond, null_id), cond)


class NegativeAsNull:
    """An EpsModel whose null condition means `negative`: eps(x, t, null) := eps(x, t, negative), so that
    guided_eps computes eps_neg + w (eps_cond - eps_neg). negative: a class id () or an embedding (D,)."""

    def __init__(self, model: EpsModel, null_id: int, negative: torch.Tensor) -> None:
        self.model, self.null_id, self.negative = model, null_id, negative

    def __call__(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        is_null = (c == self.null_id).reshape(len(c), -1).all(dim=1)  # (B,)
        neg = self.negative.to(c.device, c.dtype).expand_as(c)
        return self.model(x, t, torch.where(is_null.view(-1, *[1] * (c.dim() - 1)), neg, c))


def guided_eps(model: EpsModel, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, null_id: int, w: float) -> torch.Tensor:
    """eps_uncond + w (eps_cond - eps_uncond); both branches in one batched forward of size 2B.
    w = 1 and w = 0 need only one branch and skip the other. A negative prompt: wrap the model in NegativeAsNull."""
    if w == 1.0:
        return model(x, t, cond)
    null = torch.full_like(cond, null_id)
    if w == 0.0:
        return model(x, t, null)
    eps_c, eps_u = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, null])).chunk(2)
    return eps_u + w * (eps_c - eps_u)
