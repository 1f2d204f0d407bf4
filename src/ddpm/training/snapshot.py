"""Snapshots: one self-describing file per saved training state, written atomically, found on restart.

    RUN/snapshots/snapshot-<step:08d>.safetensors     the last `keep` of them

A snapshot is a safetensors file (nothing is unpickled on load, so a file cannot run code):
  tensors   model.*  ema.*             raw and EMA weights
            optim.<param index>.<key>   optimiser state tensors (AdamW: step, exp_avg, exp_avg_sq)
            rng.torch.<rank>            each rank's global torch CPU generator state (uint8)
            rng.cuda.<rank>             each rank's CUDA generator state, when on a GPU
  metadata  format, format_version, config (the RunConfig JSON), step, payload_sha256 (sha256 over every
            tensor's name, dtype, shape and bytes, in name order), state (JSON: samples seen, world size, batch
            per rank, grad_accum and global batch, data stream position (epoch, offset), optimiser param groups,
            python and numpy RNG states per rank, grad_scaler: the fp16 GradScaler's state_dict (scale, growth
            tracker, ...) or null in fp32/bf16, ...)

Writing: common.files.write_safetensors (a temporary file in the same folder, fsync, rename over the final name,
fsync of the folder), so a crash leaves either the old set of snapshots or the new one. Reading: a file that is
truncated, corrupt, a pickle, or from a newer format gives a one-line `SnapshotError`; `find_latest` reports it and
falls back to the previous.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ddpm.common.errors import UserError
from ddpm.common.files import PickleRefused, UnreadableFile, read_safetensors, remove_stale_temps, write_safetensors
from ddpm.common.parse import ascii_integer, json_value
from ddpm.config import RunConfig

SNAPSHOT_DIR = "snapshots"
FORMAT = "ddpm-snapshot"
FORMAT_VERSION = 1
_NAME = re.compile(r"^snapshot-(\d+)\.safetensors$")


class SnapshotError(UserError):
    """A snapshot that cannot be used; the message is one line naming the file and the reason."""


class SnapshotWarning(UserWarning):
    """A snapshot was skipped, or resuming changes how the run proceeds (world size, settings)."""


@dataclass
class Snapshot:
    config: RunConfig
    step: int
    tensors: dict[str, torch.Tensor]
    state: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable
    path: Path | None = None

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors under `prefix.` with the prefix removed (e.g. group("model") -> a state dict)."""
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}


def snapshot_dir(run_dir: Path) -> Path:
    return Path(run_dir) / SNAPSHOT_DIR


def snapshot_path(run_dir: Path, step: int) -> Path:
    return snapshot_dir(run_dir) / f"snapshot-{step:08d}.safetensors"


def list_snapshots(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every snapshot-named file, newest first; temporary files are not listed."""
    folder = snapshot_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found, reverse=True)


def payload_sha256(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def save_snapshot(run_dir: Path, snap: Snapshot, keep: int) -> Path:
    """Write `snap` atomically as snapshots/snapshot-<step>.safetensors, then delete all but the newest `keep`."""
    folder = snapshot_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    final = snapshot_path(run_dir, snap.step)
    tensors = {k: v.detach().cpu().contiguous() for k, v in snap.tensors.items()}
    metadata = {
        "format": FORMAT, "format_version": str(FORMAT_VERSION), "config": snap.config.to_json(),
        "step": str(snap.step), "state": json.dumps(snap.state), "payload_sha256": payload_sha256(tensors),
    }
    write_safetensors(final, tensors, metadata)
    for _, old in list_snapshots(run_dir)[max(1, keep):]:
        old.unlink(missing_ok=True)
    remove_stale_temps(folder, "snapshot-*.safetensors")  # left by a writer killed mid-write
    return final


def load_snapshot(path: Path, verify: bool = True) -> Snapshot:
    """Read and check one snapshot; any problem is a one-line SnapshotError. Nothing is unpickled."""
    path = Path(path)
    try:
        tensors, meta = read_safetensors(path)
    except PickleRefused:
        raise SnapshotError(f"{path} is a pickle / torch.save file, not a ddpm snapshot; refused: ddpm never unpickles "
                            "files (unpickling can run code)") from None
    except UnreadableFile as e:
        if e.io_error:
            raise SnapshotError(f"cannot read snapshot {path}: {e.reason}") from None
        raise SnapshotError(f"snapshot {path} is truncated or corrupt ({e.reason})") from None
    if meta.get("format") != FORMAT:
        raise SnapshotError(f"{path} is a safetensors file but not a ddpm snapshot")
    version = ascii_integer(meta.get("format_version", ""))
    if version is None or version < 1:
        raise SnapshotError(f"snapshot {path} has an unusable format_version {meta.get('format_version', '')[:40]!r}")
    if version > FORMAT_VERSION:
        raise SnapshotError(f"snapshot {path} has format {version}, newer than this ddpm reads ({FORMAT_VERSION}); "
                            "upgrade ddpm")
    if verify and meta.get("payload_sha256") != payload_sha256(tensors):
        raise SnapshotError(f"snapshot {path} fails its checksum (the file was damaged after it was written)")
    try:  # the checksum covers the tensors, not the metadata: each value is checked as it is read
        config = RunConfig.from_dict(json_value(meta["config"]))
        step, state = ascii_integer(meta["step"]), json_value(meta["state"])
        if step is None or step < 0:
            raise ValueError(f"step {meta['step'][:40]!r} is not a whole number >= 0")
        if not isinstance(state, dict):
            raise ValueError(f"state is {type(state).__name__}, not a table")
        return Snapshot(config, step, tensors, state, path)
    except (KeyError, ValueError, TypeError) as e:
        raise SnapshotError(f"snapshot {path} has unusable metadata ({str(e).splitlines()[0][:200]})") from None


# The counters of a snapshot's state that resuming reads as they are (launch.py, state.restore) and their least
# values; the optimiser's and the RNGs' parts are checked by what restores them (state.restore).
_STATE_COUNTERS = {"samples_seen": 0, "world_size": 1, "global_batch": 1}


def check_resumable(snap: Snapshot) -> None:
    """A one-line SnapshotError unless the snapshot's state has the counters and the list of RNG states that
    continuing a run reads (its metadata is not covered by the checksum: it may have been edited)."""
    for key, least in _STATE_COUNTERS.items():
        value = snap.state.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise SnapshotError(f"snapshot {snap.path} has unusable metadata (state.{key} must be a whole number >= "
                                f"{least}, got {str(value)[:40]})")
    if not isinstance(snap.state.get("rng"), list):
        raise SnapshotError(f"snapshot {snap.path} has unusable metadata (state.rng must be a list of RNG states)")


def find_latest(run_dir: Path) -> Snapshot | None:
    """The newest snapshot that loads and passes its checksum; each one skipped is reported in one warning line."""
    for _, path in list_snapshots(run_dir):
        try:
            return load_snapshot(path)
        except SnapshotError as e:
            warnings.warn(f"{e}; using the previous snapshot", SnapshotWarning, stacklevel=2)
    return None


def check_compatible(saved: RunConfig, requested: RunConfig, source: Path | None) -> list[str]:
    """Refuse (one line) a snapshot whose model, diffusion or data differ from the requested run; return the
    training settings that differ ("lr 0.0002 -> 0.0001"), which resuming may change."""
    def diff(a: Any, b: Any) -> list[str]:
        da, db = a.__dict__, b.__dict__
        return [f"{k} {da[k]!r} -> {db[k]!r}" for k in da if _norm(da[k]) != _norm(db.get(k))]

    hard = {name: diff(getattr(saved, name), getattr(requested, name)) for name in ("model", "diffusion")}
    soft = [d for d in hard["model"] if d.startswith("checkpointing ")]  # memory vs compute, same function
    hard["model"] = [d for d in hard["model"] if d not in soft]
    data_keys = ("source", "class_names", "crop", "background", "min_size")
    hard["data"] = [f"{k} {getattr(saved.data, k)!r} -> {getattr(requested.data, k)!r}" for k in data_keys
                    if _norm(getattr(saved.data, k)) != _norm(getattr(requested.data, k))]
    problems = [f"{part}.{d}" for part, ds in hard.items() for d in ds]
    if problems:
        raise SnapshotError(f"snapshot {source} is from an incompatible run ({'; '.join(problems)[:300]}); use the "
                            "same settings, another --out, or --resume never in an empty directory")
    return [f"model.{d}" for d in soft] + diff(saved.train, requested.train)


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """optimizer.state_dict() -> (tensors `optim.<i>.<key>`, JSON with param groups and non-tensor state)."""
    tensors, scalars = {}, {}
    for i, entry in sd["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{i}.{key}"] = value
            else:
                scalars[f"{i}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(snap: Snapshot) -> dict[str, Any]:
    """The inverse of flatten_optimizer, from a loaded snapshot."""
    state: dict[int, dict[str, Any]] = {}
    for name, t in snap.group("optim").items():
        i, key = name.split(".", 1)
        state.setdefault(int(i), {})[key] = t
    for name, v in snap.state["optimizer"]["scalars"].items():
        i, key = name.split(".", 1)
        state.setdefault(int(i), {})[key] = v
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}  # betas
              for g in snap.state["optimizer"]["param_groups"]]
    return {"state": state, "param_groups": groups}

