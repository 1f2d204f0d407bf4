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
        ancestral steps at guidance 3 (steps=None: every one of the T steps for ddpm, 50 for ddim, 20 for dpm++2m).
        Image j of a class starts from noise seeded by (seed, j): it does not depend on batch_size, on n, or on
        which other classes are asked for, and image j of every class shares its noise (compare classes)."""
        if n < 1:
            raise UserError(f"-n must be at least 1, got {n}")
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        ids = self.class_ids(classes)
        cond = torch.tensor(ids).repeat_interleave(n)  # class-major: class 0 x n, class 1 x n, ...
        index = torch.arange(n).repeat(len(ids))  # image j of each class draws its noise from (seed, j)
        return self.sample_pairs(cond, index, sampler=sampler, steps=steps, guidance=guidance, seed=seed, eta=eta,
                                 variance=variance, batch_size=batch_size, progress=progress)

    def sample_pairs(self, cond: torch.Tensor, index: torch.Tensor, *, sampler: str = "ddpm", steps: int | None = 50,
                     guidance: float = 3.0, seed: int = 0, eta: float = 0.0, variance: str = "beta_tilde",
                     batch_size: int = 64, progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """Image index[i] of class cond[i], for each i: the same image `sample` gives for that (class, j) pair, so a
        subset of the pairs (one rank's share under torchrun) can be sampled on its own."""
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        c = self.config.model
        if len(cond) == 0:
            return torch.empty(0, c.channels, c.image_size, c.image_size)
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
              cache_dir: str | Path | None = None, resume: str | Path = "auto") -> TrainedModel:
    """Load the dataset named in config.data.source, record its classes in the config, train, and return the
    trained model (EMA weights). Under torchrun, every rank calls this (see distributed.py).
    `resume`: "auto" continues from the newest valid snapshot in out_dir (a finished run asked again with the same
    training settings is reported and returned as it is; other settings are refused); "never" starts fresh and
    refuses a directory that holds a checkpoint or snapshots; a path continues from that snapshot file.
    `cache_dir`: where decoded folder datasets are cached (default $DDPM_CACHE_DIR or ~/.cache/ddpm)."""
    import warnings

    from .distributed import init, shutdown

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    try:
        config.model.validate()
    except ValueError as e:
        raise UserError(str(e)) from None
    world, device = init(torch.device(device))
    try:
        with warnings.catch_warnings():
            if not world.is_main:  # rank 0 alone reports skipped files and resume notes
                warnings.simplefilter("ignore")
            return _train_in_world(config, out, device, progress and world.is_main, cache_dir, resume, world)
    finally:
        shutdown(world)


def _train_in_world(config: RunConfig, out: Path, device: torch.device, progress: bool,
                    cache_dir: str | Path | None, resume: str | Path, world) -> TrainedModel:
    import sys
    import warnings

    from .data import load_dataset
    from .distributed import broadcast_object
    from .snapshot import SnapshotWarning, check_compatible, load_snapshot
    from .training import train

    snap, error = (_choose_snapshot(out, resume) if world.is_main else (None, None))
    path, error = broadcast_object(world, (snap.path if snap else None, error))
    if error:
        raise UserError(error)
    if path is not None and snap is None:
        snap = load_snapshot(path, verify=False)  # rank 0 verified the checksum
    if snap is not None and snap.step >= config.train.steps:
        if snap.step == config.train.steps and snap.config.train == config.train:
            if world.is_main:
                _ensure_checkpoint(out, snap)
                sys.stderr.write(f"{out} already finished at step {snap.step}; nothing to do (raise --steps to train "
                                 "further)\n")
            return load_run(out, device)
        raise UserError(f"{out} already holds a trained run (step {snap.step}); choose another --out, delete it, or "
                        f"raise --steps above {snap.step} to continue it")
    data = load_dataset(config.data.source, config.model.image_size, config.model.channels, "train",
                        options=config.data, cache_dir=cache_dir, progress=progress)
    config.data.class_names = list(data.class_names)
    config.data.aliases = dict(data.aliases)
    config.model.num_classes = len(data.class_names)
    if snap is not None:
        changed = check_compatible(snap.config, config, snap.path)
        if changed:
            warnings.warn(f"resuming {snap.path} with changed training settings: {'; '.join(changed)}", SnapshotWarning)
        saved_world = int(snap.state["world_size"])
        if saved_world != world.world_size:
            warnings.warn(
                f"snapshot at step {snap.step} was written by {saved_world} process(es) (global batch "
                f"{snap.state['global_batch']}); continuing with {world.world_size} (global batch "
                f"{config.train.batch_size * world.world_size}): the {snap.state['samples_seen']:,} samples seen so "
                "far are kept and the data order continues where it stopped", SnapshotWarning)
    state = train(config, data, out, device=device, progress=progress, world=world, resume=snap)
    schedule = NoiseSchedule.create(config.diffusion.schedule, config.diffusion.num_steps)
    return TrainedModel(config, state.ema.eval(), schedule, state.step, device)


def _choose_snapshot(out: Path, resume: str | Path):
    """(snapshot to continue from or None, error line or None); run on rank 0, whose answer every rank follows."""
    from .checkpoint import CHECKPOINT_NAME
    from .snapshot import find_latest, list_snapshots, load_snapshot

    finished = (out / CHECKPOINT_NAME).exists()
    try:
        if str(resume) == "never":
            if finished or list_snapshots(out):
                what = "a trained run" if finished else "snapshots of an unfinished run (--resume auto continues it)"
                return None, f"{out} already holds {what}; choose another --out or delete it first"
            return None, None
        if str(resume) == "auto":
            snap = find_latest(out)
            if snap is None and finished:
                return None, f"{out} already holds a trained run; choose another --out or delete it first"
            return snap, None
        path = Path(resume).expanduser()
        if path.is_dir():  # a run directory: its newest valid snapshot
            snap = find_latest(path)
            return (snap, None) if snap else (None, f"--resume {resume}: no usable snapshot in that directory")
        return load_snapshot(path), None
    except UserError as e:
        return None, str(e)


def _ensure_checkpoint(out: Path, snap) -> None:
    """A run killed between its final snapshot and checkpoint... cannot happen (checkpoint first), but a deleted
    checkpoint is rebuilt from the final snapshot."""
    from .checkpoint import CHECKPOINT_NAME, save_checkpoint

    if not (out / CHECKPOINT_NAME).exists():
        model, ema = UNet(snap.config.model), UNet(snap.config.model)
        model.load_state_dict(snap.group("model"))
        ema.load_state_dict(snap.group("ema"))
        save_checkpoint(out / CHECKPOINT_NAME, snap.config, model, ema, snap.step)
