"""The preprocessing cache: every image of a folder decoded once, stored as uint8 on disk, memory-mapped.

Where: $DDPM_CACHE_DIR, else ~/.cache/ddpm (or an explicit `cache_dir`), then
    images/<hash(root, decode spec)>/<content key>.npy   (N, C, P, P) uint8, written by numpy.lib.format
    images/<hash(root, decode spec)>/<content key>.json  rows kept, files skipped and why, original sizes/modes
The content key hashes the cache format, the decode spec (size, channels, crop, background), the minimum size,
the class names and every file's (relative path, class, byte size, mtime): any added, removed, replaced or
touched file gives a new key and a rebuild; the superseded entry of the same folder and spec is deleted.
The .npy is complete before its .json is written (both atomically via common.files, from per-process temporary
files), so an interrupted build is never used and processes building the same entry at once (ranks) do not collide.
Large folders are decoded by a process pool started the platform's way (`multiprocessing.get_context()`: fork on
Linux up to Python 3.13, spawn on Windows and macOS, or whatever the program set with set_start_method): Windows
has no fork, and fork is unsafe on macOS. Under spawn each worker imports ddpm once (seconds, paid once per pool),
which PARALLEL_FROM amortises; what crosses to a worker is only module-level functions and plain data.
Only one batch is ever copied into RAM (`MappedImages.__getitem__`); the dataset itself stays on disk.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import UnidentifiedImageError

from ddpm.common.errors import UserError
from ddpm.common.files import atomic_path, write_text_atomic
from ddpm.data.folder import FolderIndex
from ddpm.data.transforms import MAX_PIXELS, DecodeSpec, ImageTooLarge, decode_image, open_image

CACHE_FORMAT = 1
PARALLEL_FROM = 256  # files; smaller folders are decoded in-process (a spawned worker's start costs seconds)


def default_cache_dir() -> Path:
    return Path(os.environ.get("DDPM_CACHE_DIR") or Path.home() / ".cache" / "ddpm").expanduser()


class MappedImages:
    """Read-only (N, C, H, W) uint8 images in a memory-mapped .npy. Indexing by an int, slice, list or index
    tensor returns a torch uint8 tensor holding only the rows asked for."""

    dtype = torch.uint8

    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self._array = np.load(path, mmap_mode="r")[:count]  # (N, C, H, W)

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self._array.shape)

    def __len__(self) -> int:
        return self._array.shape[0]

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, torch.Tensor):
            idx = idx.numpy()
        return torch.from_numpy(np.array(self._array[idx]))  # a copy of just these rows


@dataclass
class CacheEntry:
    images: MappedImages  # (N, C, P, P) uint8, P = spec.stored_size
    kept: list[int]  # row i holds index.files[kept[i]]
    skipped: list[tuple[str, str]]  # files that failed to decode: (path, reason)
    sizes: list[tuple[int, int]]  # original (width, height) of each row
    modes: list[str]  # original PIL mode of each row
    built: bool  # True when this call decoded the folder, False on a cache hit


def decode_file(path: Path, spec: DecodeSpec, min_size: int) -> tuple[np.ndarray | None, str, tuple[int, int], str]:
    """(array (P, P, C) or None, reason when None, original size, original mode). Never raises for a bad file."""
    try:
        with open_image(path) as im:
            size, mode = im.size, im.mode
            if min(size) < min_size:
                return None, f"too small ({size[0]}x{size[1]}, minimum side {min_size})", size, mode
            return decode_image(im, spec), "", size, mode
    except ImageTooLarge as e:
        return None, str(e), (0, 0), ""
    except UnidentifiedImageError:
        return None, "not an image", (0, 0), ""
    except PermissionError as e:
        return None, f"unreadable ({e.strerror})", (0, 0), ""
    except Exception as e:  # truncated or corrupt data: OSError, SyntaxError, ValueError... from the decoders
        return None, f"corrupt or truncated ({type(e).__name__}: {str(e)[:80]})", (0, 0), ""


def _decode_star(args: tuple[Path, DecodeSpec, int]):
    return decode_file(*args)


def content_key(index: FolderIndex, spec: DecodeSpec, min_size: int) -> str:
    files = [(str(f.path.relative_to(index.root)), f.label, f.size, f.mtime_ns) for f in index.files]
    blob = json.dumps([CACHE_FORMAT, asdict(spec), min_size, MAX_PIXELS, index.class_names, files])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def entry_dir(cache_dir: Path, root: Path, spec: DecodeSpec) -> Path:
    h = hashlib.sha256(json.dumps([str(root.resolve()), asdict(spec)]).encode()).hexdigest()[:16]
    return cache_dir / "images" / f"{root.resolve().name}-{h}"


def open_cache(index: FolderIndex, spec: DecodeSpec, min_size: int, cache_dir: Path | None = None,
               progress: bool = False, workers: int | None = None) -> CacheEntry:
    """The cache entry for this folder and spec: loaded if its key matches, built (and the old one removed) if not."""
    folder = entry_dir(cache_dir or default_cache_dir(), index.root, spec)
    key = content_key(index, spec, min_size)
    npy, meta = folder / f"{key}.npy", folder / f"{key}.json"
    built = not meta.is_file()
    if built:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _build(index, spec, min_size, npy, meta, progress, workers)
        except OSError as e:
            raise UserError(f"cannot write the data cache in {folder} ({e.strerror}); set --cache-dir or DDPM_CACHE_DIR to a writable folder") from None
        for old in folder.iterdir():  # superseded entries; another process's *.tmp is left alone
            if old.suffix in (".npy", ".json") and old.stem != key:
                old.unlink(missing_ok=True)
    m = json.loads(meta.read_text())
    return CacheEntry(MappedImages(npy, len(m["kept"])), m["kept"], [tuple(s) for s in m["skipped"]],
                      [tuple(s) for s in m["sizes"]], m["modes"], built)


def _build(index: FolderIndex, spec: DecodeSpec, min_size: int, npy: Path, meta: Path, progress: bool,
           workers: int | None) -> None:
    with atomic_path(npy) as tmp:  # per process: ranks building at once never share a file
        kept, skipped, sizes, modes = _decode_into(tmp, index, spec, min_size, progress, workers)
    record = {"format": CACHE_FORMAT, "spec": asdict(spec), "kept": kept, "skipped": skipped, "sizes": sizes,
              "modes": modes}
    write_text_atomic(meta, json.dumps(record))


def _decode_into(tmp: Path, index: FolderIndex, spec: DecodeSpec, min_size: int, progress: bool,
                 workers: int | None) -> tuple[list[int], list[tuple[str, str]], list[tuple[int, int]], list[str]]:
    """Decode every file of `index` into a new .npy memmap at `tmp`; returns (kept, skipped, sizes, modes)."""
    from tqdm.auto import tqdm

    p, n = spec.stored_size, len(index.files)
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(max(n, 1), spec.channels, p, p))
    kept, skipped, sizes, modes = [], [], [], []
    jobs = [(f.path, spec, min_size) for f in index.files]
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    parallel = workers > 1 and n >= PARALLEL_FROM
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context()) if parallel else None
    results = pool.map(_decode_star, jobs, chunksize=16) if pool else map(_decode_star, jobs)
    try:
        for i, (arr, reason, size, mode) in enumerate(tqdm(results, total=n, desc="decoding images into the cache",
                                                            unit="img", disable=not progress, dynamic_ncols=True)):
            if arr is None:
                skipped.append((str(index.files[i].path), reason))
                continue
            out[len(kept)] = arr.transpose(2, 0, 1)  # (P, P, C) -> (C, P, P)
            kept.append(i)
            sizes.append(size)
            modes.append(mode)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    out.flush()
    del out
    return kept, skipped, sizes, modes
