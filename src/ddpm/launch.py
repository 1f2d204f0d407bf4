"""Starting or continuing a training run: choose the snapshot to resume from (rank 0 decides, every rank follows),
refuse what would overwrite a finished run, load the data, record its classes in the config, then train
(training/loop.py) and return the trained model. Under torchrun every rank calls `train_run`."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

from ddpm.api import TrainedModel, load_run
from ddpm.common.errors import UserError
from ddpm.common.outputs import check_output
from ddpm.config import CONFIG_NAME, RunConfig, same_training
from ddpm.data.dataset import load_dataset
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.network.unet import UNet
from ddpm.runtime.distributed import World, broadcast_object, init, shutdown
from ddpm.text.bank import build_caption_bank
from ddpm.text.condition import TextLayout
from ddpm.training.checkpoint import CHECKPOINT_NAME, save_checkpoint
from ddpm.training.loop import train
from ddpm.training.watch import Evaluator
from ddpm.training.snapshot import (
    SNAPSHOT_DIR,
    Snapshot,
    SnapshotWarning,
    check_compatible,
    check_resumable,
    find_latest,
    list_snapshots,
    load_snapshot,
    snapshot_dir,
)


def train_run(config: RunConfig, out_dir: str | Path, device: str | torch.device = "cpu", progress: bool = True,
              cache_dir: str | Path | None = None, resume: str | Path = "auto",
              evaluator: Evaluator | None = None) -> TrainedModel:
    """Load the dataset named in config.data.source, record its classes in the config, train, and return the
    trained model (EMA weights). Under torchrun, every rank calls this (see runtime/distributed.py).
    `resume`: "auto" continues from the newest valid snapshot in out_dir (a finished run asked again with the same
    training settings is reported and returned as it is; other settings are refused); "never" starts fresh and
    refuses a directory that holds a checkpoint or snapshots; a path continues from that snapshot file (or a run
    directory's newest), into an out_dir that holds no other run. Every mode refuses an out_dir that holds files but
    no run (no config.json, checkpoint or snapshots).
    `cache_dir`: where decoded folder datasets are cached (default $DDPM_CACHE_DIR or ~/.cache/ddpm).
    `evaluator`: measures quality every config.train.eval_every steps (evaluation.during.TrainingEval; rank 0's)."""
    out = check_output(Path(out_dir), "--out", folder=True, force=True)  # what may be in it: _choose_snapshot
    try:
        config.model.validate()
        config.diffusion.validate()
    except ValueError as e:
        raise UserError(str(e)) from None
    world, device = init(torch.device(device))
    try:
        with warnings.catch_warnings():
            if not world.is_main:  # rank 0 alone reports skipped files and resume notes
                warnings.simplefilter("ignore")
            return _train_in_world(config, out, device, progress and world.is_main, cache_dir, resume, world,
                                   evaluator)
    finally:
        shutdown(world)


def _train_in_world(config: RunConfig, out: Path, device: torch.device, progress: bool,
                    cache_dir: str | Path | None, resume: str | Path, world: World,
                    evaluator: Evaluator | None = None) -> TrainedModel:
    snap, error = (_choose_snapshot(out, resume) if world.is_main else (None, None))
    path, error = broadcast_object(world, (snap.path if snap else None, error))
    if error:
        raise UserError(error)
    if path is not None and snap is None:
        snap = load_snapshot(path, verify=False)  # rank 0 verified the checksum
    if snap is not None and snap.step >= config.train.steps:
        if snap.step == config.train.steps and same_training(snap.config.train, config.train):
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
                f"{config.train.batch_size * world.world_size * config.train.grad_accum}): the {snap.state['samples_seen']:,} samples seen so "
                "far are kept and the data order continues where it stopped", SnapshotWarning)
    text = None
    if config.model.cond == "text":
        text = build_caption_bank(data, Path(cache_dir).expanduser() if cache_dir else None,
                                  TextLayout.of(config.model))
    state = train(config, data, out, device=device, progress=progress, world=world, resume=snap, text=text,
                  evaluator=evaluator if world.is_main else None)
    schedule = NoiseSchedule.create(config.diffusion.schedule, config.diffusion.num_steps)
    return TrainedModel(config, state.ema.eval(), schedule, state.step, device, out)


def resume_base(out: str | Path, resume: str | Path) -> Path | None:
    """The config.json of the run that `resume` would continue (out's own for "auto", the given run's for a path),
    or None: continuing a run takes its own settings where no flag changes them, whatever today's defaults are."""
    if str(resume) == "never":
        return None
    path = Path(out if str(resume) == "auto" else resume).expanduser()
    if path.is_file():  # a snapshot file: RUN/snapshots/snapshot-*.safetensors
        path = path.parent.parent
    found = path / CONFIG_NAME
    return found if found.is_file() else None


def _choose_snapshot(out: Path, resume: str | Path) -> tuple[Snapshot | None, str | None]:
    """(snapshot to continue from or None, error line or None); run on rank 0, whose answer every rank follows."""
    finished = (out / CHECKPOINT_NAME).exists()
    refused = _refuse_foreign_folder(out)
    if refused:
        return None, refused
    try:
        snap, error = _snapshot_to_continue(out, resume, finished)
        if snap is not None:
            check_resumable(snap)
        return snap, error
    except UserError as e:
        return None, str(e)


def _snapshot_to_continue(out: Path, resume: str | Path, finished: bool) -> tuple[Snapshot | None, str | None]:
    """The snapshot `resume` names (or None, with the error line when there is none to be had)."""
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
    if not _is_own_run(out, path) and (finished or list_snapshots(out)):
        what = "a trained run" if finished else "snapshots of another run"
        return None, (f"{out} already holds {what}; --resume {resume} continues into a new --out only, or give "
                      f"--resume auto to continue {out} itself")
    if path.is_dir():  # a run directory: its newest valid snapshot
        snap = find_latest(path)
        return (snap, None) if snap else (None, f"--resume {resume}: no usable snapshot in that directory")
    return load_snapshot(path), None


def _is_own_run(out: Path, resume: Path) -> bool:
    """Whether `resume` (a run directory or a snapshot file) is `out` itself or one of out's snapshots."""
    target = resume.resolve() if resume.is_dir() else resume.resolve().parent
    return target in (out.resolve(), snapshot_dir(out).resolve())


def _refuse_foreign_folder(out: Path) -> str | None:
    """An error line when `out` holds files but is not a run (no config.json, checkpoint or snapshots), else None:
    training there would mix its files with someone else's."""
    if not out.is_dir() or not any(out.iterdir()):
        return None
    if any((out / name).exists() for name in (CONFIG_NAME, CHECKPOINT_NAME, SNAPSHOT_DIR)):
        return None
    return f"{out} is a folder with other files, not a run; choose a new or empty --out"


def _ensure_checkpoint(out: Path, snap: Snapshot) -> None:
    """A run killed between its final snapshot and checkpoint... cannot happen (checkpoint first), but a deleted
    checkpoint is rebuilt from the final snapshot."""
    if not (out / CHECKPOINT_NAME).exists():
        model, ema = UNet(snap.config.model), UNet(snap.config.model)
        model.load_state_dict(snap.group("model"))
        ema.load_state_dict(snap.group("ema"))
        save_checkpoint(out / CHECKPOINT_NAME, snap.config, model, ema, snap.step)
