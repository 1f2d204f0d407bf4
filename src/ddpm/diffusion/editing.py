"""Editing with a trained model, as guides of the one sampling loop (sampler.sample): each guide says which steps
the loop takes (`plan`), where it starts (`start`) and what it does to x after each denoising step (`after_step`).
No guide calls the network.

Image to image (SDEdit, Meng et al. 2022), `ImageToImage`: of the sampler's N steps (t_0 = T-1, ..., t_{N-1}) the
last m = round(strength N) are taken, from x_t ~ q(x_t | x_0) = N(sqrt(ab_t) x_0, (1 - ab_t) I) at t = t_{N-m}
(about strength x T). strength 0: no step, x_0 itself; strength 1: x_{T-1} = z ~ N(0, I), plain sampling.

Inpainting (RePaint, Lugmayr et al. 2022, Algorithm 1), `Inpainting`: after each step to s the known pixels are
replaced by a forward-noised copy of the input, x_s <- m x_s^known + (1 - m) x_s, x_s^known ~ q(x_s | x_0) (at s = -1
the input itself, so the known pixels come out exact). Resampling (`resampling_plan`): every `jump` steps the loop
goes back up `jump` steps, x_u ~ q(x_u | x_s) (a `forward.q_jump`), and denoises them again, `repeats` times in
all, which lets the generated region agree with the known one.

Interpolation, `slerp` and `StartFrom`: the starting noise of frame u in [0, 1] is the spherical interpolation of
two seeds' noise (a Gaussian vector's norm stays typical, which a straight line between two would shrink by up to
1/sqrt 2), with a deterministic sampler, so that each frame is a function of its noise and condition alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from ddpm.common.errors import UserError
from ddpm.diffusion.forward import q_jump
from ddpm.diffusion.sampling import DEFAULT_JUMP, DEFAULT_REPEATS, frames_check, jump_check, repeats_check
from ddpm.diffusion.schedule import NoiseSchedule

Draw = Callable[[], torch.Tensor]  # fresh N(0, I) noise of the batch's shape, from the loop's per-image generators
Pair = tuple[int, int]  # (t, t_prev): a denoising step when t_prev < t, a jump back up (RePaint) when t_prev > t


class Guide(Protocol):
    """What the sampling loop asks of an edit; rows of its tensors are the images of one batch (`rows`)."""

    def plan(self, pairs: list[Pair]) -> list[Pair]:
        """The steps to take, given the sampler's N steps (sampler.timestep_pairs)."""
        ...

    def start(self, schedule: NoiseSchedule, t: int, z: torch.Tensor) -> torch.Tensor:
        """x at the plan's first t (-1 for an empty plan), given the loop's first draw z ~ N(0, I), (B, C, H, W)."""
        ...

    def after_step(self, schedule: NoiseSchedule, t_prev: int, x: torch.Tensor, draw: Draw) -> torch.Tensor:
        """x_{t_prev} after a denoising step, changed or not; draw() -> fresh (B, C, H, W) N(0, I) noise."""
        ...

    def rows(self, start: int, stop: int) -> "Guide":
        """The guide of images start..stop-1 (one batch of sampler.sample)."""
        ...


def denoising_steps(plan: list[Pair]) -> int:
    """Network evaluations of a plan: its pairs that go down (t_prev < t)."""
    return sum(1 for t, t_prev in plan if t_prev < t)


def image_to_image_steps(num_steps: int, strength: float) -> int:
    """m = round(strength N): the steps image to image takes of the sampler's N."""
    return round(strength * num_steps)


def inpainting_steps(num_steps: int, jump: int, repeats: int) -> int:
    """Denoising steps of RePaint's plan over the sampler's N: N + (repeats - 1) jump floor((N - 1) / jump)."""
    return num_steps + (repeats - 1) * jump * ((num_steps - 1) // jump)


@dataclass(frozen=True)
class ImageToImage:
    """SDEdit: x0 (B, C, H, W) in [-1, 1], noised to about strength x T and denoised from there (module doc)."""

    x0: torch.Tensor
    strength: float

    def plan(self, pairs: list[Pair]) -> list[Pair]:
        m = image_to_image_steps(len(pairs), self.strength)
        return pairs[len(pairs) - m:] if m else []

    def start(self, schedule: NoiseSchedule, t: int, z: torch.Tensor) -> torch.Tensor:
        if t == schedule.num_steps - 1:  # the whole chain: x_T ~ N(0, I), exactly as sampling starts
            return z
        return q_jump(schedule, self.x0.to(z.device), -1, t, z)  # q(x_t | x_0), DDPM eq. 4; t = -1: x0 itself

    def after_step(self, schedule: NoiseSchedule, t_prev: int, x: torch.Tensor, draw: Draw) -> torch.Tensor:
        return x

    def rows(self, start: int, stop: int) -> "ImageToImage":
        return ImageToImage(self.x0[start:stop], self.strength)


@dataclass(frozen=True)
class Inpainting:
    """RePaint: x0 (B, C, H, W) in [-1, 1]; known (B, 1, H, W) bool, True where x0 is kept (module doc)."""

    x0: torch.Tensor
    known: torch.Tensor
    jump: int = DEFAULT_JUMP
    repeats: int = DEFAULT_REPEATS

    def plan(self, pairs: list[Pair]) -> list[Pair]:
        return resampling_plan(pairs, self.jump, self.repeats)

    def start(self, schedule: NoiseSchedule, t: int, z: torch.Tensor) -> torch.Tensor:
        return z  # x_T ~ N(0, I); the known region is put in after the first step

    def after_step(self, schedule: NoiseSchedule, t_prev: int, x: torch.Tensor, draw: Draw) -> torch.Tensor:
        x0 = self.x0.to(x.device)
        # x_s^known ~ q(x_s | x_0); at s = -1 the input itself: the known pixels of the result are exactly the input's
        known = x0 if t_prev < 0 else q_jump(schedule, x0, -1, t_prev, draw())
        return torch.where(self.known.to(x.device), known, x)

    def rows(self, start: int, stop: int) -> "Inpainting":
        return Inpainting(self.x0[start:stop], self.known[start:stop], self.jump, self.repeats)


@dataclass(frozen=True)
class StartFrom:
    """Begin the whole chain at given x_T (B, C, H, W) instead of the loop's own draw (interpolation's frames)."""

    x_T: torch.Tensor

    def plan(self, pairs: list[Pair]) -> list[Pair]:
        return pairs

    def start(self, schedule: NoiseSchedule, t: int, z: torch.Tensor) -> torch.Tensor:
        return self.x_T.to(z.device, z.dtype)

    def after_step(self, schedule: NoiseSchedule, t_prev: int, x: torch.Tensor, draw: Draw) -> torch.Tensor:
        return x

    def rows(self, start: int, stop: int) -> "StartFrom":
        return StartFrom(self.x_T[start:stop])


def resampling_plan(pairs: list[Pair], jump: int, repeats: int) -> list[Pair]:
    """RePaint's schedule over the sampler's levels l_0 = T-1 > l_1 > ... > l_N = -1 (pairs (l_k, l_{k+1})): step
    down; on reaching a level l_k with k a multiple of `jump` (0 < k < N), go back up to l_{k-jump} and step down
    again, repeats - 1 times (`inpainting_steps` denoising steps in all)."""
    if jump_check(jump) or repeats_check(repeats):
        raise UserError(f"RePaint needs {jump_check(jump) or repeats_check(repeats)}, got jump {jump!r}, "
                        f"repeats {repeats!r}")
    levels = [t for t, _ in pairs] + ([pairs[-1][1]] if pairs else [])
    n, k, out, jumped = len(pairs), 0, [], {}
    while k < n:
        out.append((levels[k], levels[k + 1]))
        k += 1
        if k % jump == 0 and k < n and jumped.get(k, 0) < repeats - 1:
            jumped[k] = jumped.get(k, 0) + 1
            out.append((levels[k], levels[k - jump]))  # back up: x_{l_{k-jump}} ~ q(. | x_{l_k})
            k -= jump
    return out


def slerp(a: torch.Tensor, b: torch.Tensor, u: float) -> torch.Tensor:
    """Spherical interpolation of two noise tensors of one shape, each flattened to a vector:
    sin((1 - u) theta) / sin(theta) a + sin(u theta) / sin(theta) b, theta the angle between them; a at u = 0 and b at
    u = 1 exactly; a straight line when they are (anti)parallel to rounding."""
    if u == 0:
        return a.clone()
    if u == 1:
        return b.clone()
    a64, b64 = a.double().flatten(), b.double().flatten()
    cos = float(torch.dot(a64, b64) / (a64.norm() * b64.norm()))
    theta = math.acos(max(-1.0, min(1.0, cos)))
    if math.sin(theta) < 1e-6:
        return torch.lerp(a, b, u)
    wa, wb = math.sin((1 - u) * theta) / math.sin(theta), math.sin(u * theta) / math.sin(theta)
    return (wa * a.double() + wb * b.double()).to(a.dtype)


def frame_positions(frames: int) -> list[float]:
    """u = f / (frames - 1) for f = 0..frames-1: both ends included."""
    if frames_check(frames):
        raise UserError(f"frames must be {frames_check(frames)}, got {frames!r}")
    return [f / (frames - 1) for f in range(frames)]
