"""Cached features of real images, so the reference side of FID/KID is extracted once per dataset.

Key: the feature extractor's name, and the dataset's identity (SHA-256 of the uint8 image bytes, which also fixes
image size, channels and count). Files: <cache>/eval-features/<key>.safetensors holding `features` (N, D) float32,
with the source, split and extractor in the metadata. Default cache: $DDPM_CACHE_DIR or ~/.cache/ddpm.

`reference_features` is the one way the reference side is read or made: `ddpm eval`, the evaluation during
training (evaluation/during.py) and bench/sampler_quality.py all compare with the whole split through it, so they
share one entry. On a miss it times the first batch and says how long the whole pass will take.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable

import torch

from ddpm.common.errors import UserError
from ddpm.common.files import UnreadableFile, read_safetensors, write_safetensors
from ddpm.data.cache import default_cache_dir
from ddpm.evaluation.features import FeatureFn, extract


def images_digest(images: torch.Tensor, chunk: int = 4096) -> str:
    """SHA-256 over the shape and the uint8 bytes of images (N, C, H, W), read in chunks (works on memmaps)."""
    h = hashlib.sha256(str(tuple(images.shape)).encode())
    for start in range(0, len(images), chunk):
        h.update(torch.as_tensor(images[start:start + chunk]).contiguous().numpy().tobytes())
    return h.hexdigest()


def cached_features(extractor: str, images: torch.Tensor, compute: Callable[[], torch.Tensor],
                    cache_dir: Path | None = None, meta: dict[str, str] | None = None) -> tuple[torch.Tensor, bool]:
    """Features of `images` under `extractor`: from the cache if there, else compute() and store them.
    Returns (features (N, D) float32, whether they came from the cache)."""
    key = hashlib.sha256(f"{extractor}\n{images_digest(images)}".encode()).hexdigest()[:32]
    folder = Path(cache_dir or default_cache_dir()).expanduser() / "eval-features"
    path = folder / f"{key}.safetensors"
    if path.is_file():
        try:
            feats = read_safetensors(path)[0]["features"]
            if len(feats) == len(images):
                return feats, True
        except (UnreadableFile, KeyError):
            pass  # damaged: recompute and overwrite
    feats = compute().float().contiguous()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_safetensors(path, {"features": feats}, metadata={"extractor": extractor, "count": str(len(images)),
                                                               "shape": str(tuple(images.shape)), **(meta or {})})
    except OSError as e:
        raise UserError(f"cannot write the evaluation cache in {folder} ({e.strerror}); set --cache-dir or DDPM_CACHE_DIR") from None
    return feats, False


def reference_features(extractor: str, fn: FeatureFn, images: torch.Tensor, batch_size: int, cache_dir: Path | None = None,
                       meta: dict[str, str] | None = None, log: Callable[[str], None] = lambda _: None,
                       progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, bool]:
    """fn's features of the real images (N, C, H, W) uint8, from the cache or made once and stored: (N, D) float32,
    and whether they were cached. Before a pass it logs its expected length, from the time of the first batch."""

    def compute() -> torch.Tensor:
        t0 = time.perf_counter()
        first = extract(fn, images[:batch_size], batch_size, progress)  # also warms up the kernels: errs long
        per_image = (time.perf_counter() - t0) / len(first)
        log(f"{extractor} features of {len(images):,} real images: about {per_image * len(images):.0f} s, once "
            f"(cached in {Path(cache_dir or default_cache_dir()).expanduser() / 'eval-features'})")
        rest = [extract(fn, images[batch_size:], batch_size, progress)] if len(images) > batch_size else []
        return torch.cat([first, *rest])

    return cached_features(extractor, images, compute, cache_dir, meta)
