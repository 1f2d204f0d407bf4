"""Classifier-free guidance (Ho & Salimans 2022).

Training: each sample's condition is replaced by the null id with probability p, so one network learns both
eps(x, t, c) and eps(x, t, null).
Sampling: eps_hat = eps_uncond + w (eps_cond - eps_uncond).
    w = 0: the unconditional model (the class is ignored);
    w = 1: the plain conditional model (no guidance);
    w > 1: extrapolates away from the unconditional prediction: more typical, less diverse samples.
"""

from __future__ import annotations

import torch

from .diffusion import EpsModel


def drop_condition(cond: torch.Tensor, null_id: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each entry of cond (B,) by null_id with probability p."""
    if p <= 0:
        return cond
    drop = torch.rand(cond.shape, generator=generator) < p
    return torch.where(drop.to(cond.device), torch.full_like(cond, null_id), cond)


def guided_eps(model: EpsModel, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, null_id: int | torch.Tensor,
               w: float) -> torch.Tensor:
    """eps_uncond + w (eps_cond - eps_uncond); both branches in one batched forward of size 2B.
    w = 1 and w = 0 need only one branch and skip the other. A tensor null_id (B,) of class ids is a negative prompt:
    eps_neg + w (eps_cond - eps_neg), guiding away from those classes instead of from the unconditional model."""
    if w == 1.0:
        return model(x, t, cond)
    null = null_id.to(cond.device) if isinstance(null_id, torch.Tensor) else torch.full_like(cond, null_id)
    if w == 0.0:
        return model(x, t, null)
    eps_c, eps_u = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, null])).chunk(2)
    return eps_u + w * (eps_c - eps_u)
