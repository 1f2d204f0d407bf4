"""The Python API, mirroring the CLI, for notebooks and scripts.

    import ddpm
    run = ddpm.load_run("runs/demo")                      # a run directory or a checkpoint file
    x = run.sample(["zebra", "cat"], n=4, sampler="ddpm", steps=50, guidance=3.0, seed=0)  # (8, C, H, W) in [-1, 1]
    images = run.sample_pil("zebra", n=4)                 # list of PIL images
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from .checkpoint import load_checkpoint
from .config import RunConfig
from .data import to_uint8
from .errors import UserError
from .network import UNet
from .sampler import PerSampleNoise, sample
from .schedule import NoiseSchedule

ClassSpec = str | int


def resolve_class(spec: ClassSpec, class_names: Sequence[str], aliases: dict[str, list[str]] | None = None) -> int:
    """A class name or alias (case-insensitive) or index -> class id; unknown names give a one-line UserError."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().lstrip("-").isdigit()):
        i = int(spec)
        if 0 <= i < len(class_names):
            return i
        raise UserError(f"class index {i} is out of range 0..{len(class_names) - 1}; known classes: {', '.join(class_names)}")
    lowered = [c.lower() for c in class_names]
    key = spec.strip().lower()
    if key in lowered:
        return lowered.index(key)
    for name, others in (aliases or {}).items():  # e.g. "cane" -> "dog"
        if key in (o.lower() for o in others) and name.lower() in lowered:
            return lowered.index(name.lower())
    raise UserError(f"unknown class {spec!r}; known classes: {', '.join(class_names)}")


@dataclass
class TrainedModel:
    """A trained run: its config, network (EMA weights by default), schedule and class names."""

    config: RunConfig
    model: UNet
    schedule: NoiseSchedule
    step: int
    device: torch.device

    @property
    def class_names(self) -> list[str]:
        return list(self.config.data.class_names)

    def class_ids(self, classes: ClassSpec | Sequence[ClassSpec] | None) -> list[int]:
        """None means every class in order."""
        if classes is None:
            return list(range(len(self.class_names)))
        if isinstance(classes, (str, int)):
            classes = [classes]
        return [resolve_class(c, self.class_names, self.config.data.aliases) for c in classes]

    def sample(
        self,
        classes: ClassSpec | Sequence[ClassSpec] | None = None,
        n: int = 8,
        *,
        sampler: str = "ddpm",
        steps: int | None = 50,
        guidance: float = 3.0,
        seed: int = 0,
        eta: float = 0.0,
        variance: str = "beta_tilde",
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """n images per class, class-major: (len(classes) * n, C, H, W) float in [-1, 1]. Defaults: 50 strided
        ancestral steps at guidance 3 (steps=None: every one of the T steps for ddpm, 50 for ddim).
        Image j of a class starts from noise seeded by (seed, j): it does not depend on batch_size, on n, or on
        which other classes are asked for, and image j of every class shares its noise (compare classes)."""
        if n < 1:
            raise UserError(f"-n must be at least 1, got {n}")
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        ids = self.class_ids(classes)
        cond = torch.tensor(ids).repeat_interleave(n)  # class-major: class 0 x n, class 1 x n, ...
        index = torch.arange(n).repeat(len(ids))  # image j of each class draws its noise from (seed, j)
        c = self.config.model
        out = []
        for start in range(0, len(cond), batch_size):
            stop = min(start + batch_size, len(cond))
            x = sample(self.model, self.schedule, cond[start:stop], (c.channels, c.image_size, c.image_size),
                       PerSampleNoise(seed, index[start:stop].tolist()), sampler=sampler, steps=steps,
                       guidance=guidance, null_id=self.model.null_class, eta=eta, variance=variance, device=self.device)
            out.append(x.cpu())
            if progress is not None:
                progress(stop - start)
        return torch.cat(out)

    def sample_pil(self, classes: ClassSpec | Sequence[ClassSpec] | None = None, n: int = 8, **kwargs) -> list[Image.Image]:
        """Like `sample`, as a list of PIL images."""
        return tensor_to_pil(self.sample(classes, n, **kwargs))


def tensor_to_pil(x: torch.Tensor) -> list[Image.Image]:
    """(N, C, H, W) in [-1, 1] -> N PIL images (mode L or RGB)."""
    arr = to_uint8(x).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arr]


def load_run(path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True) -> TrainedModel:
    """Rebuild a trained model from a run directory or checkpoint file, with no other information."""
    config, weights, ema_weights, step = load_checkpoint(path)
    model = UNet(config.model)
    state = ema_weights if use_ema and ema_weights else weights
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"checkpoint {path} does not match its config ({first}); it is damaged or from another version") from None
    device = torch.device(device)
    model.to(device).eval().requires_grad_(False)
    schedule = NoiseSchedule.create(config.diffusion.schedule, config.diffusion.num_steps)
    return TrainedModel(config, model, schedule, step, device)


def train_run(config: RunConfig, out_dir: str | Path, device: str | torch.device = "cpu", progress: bool = True,
              cache_dir: str | Path | None = None) -> TrainedModel:
    """Load the dataset named in config.data.source, record its classes in the config, train, and return the
    trained model (EMA weights). Refuses to overwrite a run directory that already holds a checkpoint.
    `cache_dir`: where decoded folder datasets are cached (default $DDPM_CACHE_DIR or ~/.cache/ddpm)."""
    from .checkpoint import CHECKPOINT_NAME
    from .data import load_dataset
    from .training import train

    out = Path(out_dir).expanduser()
    if (out / CHECKPOINT_NAME).exists():
        raise UserError(f"{out} already holds a trained run; choose another --out or delete it first")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    try:
        config.model.validate()
    except ValueError as e:
        raise UserError(str(e)) from None
    data = load_dataset(config.data.source, config.model.image_size, config.model.channels, "train",
                        options=config.data, cache_dir=cache_dir, progress=progress)
    config.data.class_names = list(data.class_names)
    config.data.aliases = dict(data.aliases)
    config.model.num_classes = len(data.class_names)
    device = torch.device(device)
    state = train(config, data, out, device=device, progress=progress)
    schedule = NoiseSchedule.create(config.diffusion.schedule, config.diffusion.num_steps)
    return TrainedModel(config, state.ema.eval(), schedule, state.step, device)
