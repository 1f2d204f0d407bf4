"""Datasets as uint8 images with class labels, and the per-batch transform of the training loop.

Sources:
  builtin:animal-shapes  10,000 grayscale silhouettes that ship with a package (builtin.py)
  builtin:shapes-text    coloured shapes with captions of what was drawn, generated in RAM (shapes_text.py)
  PATH                   a folder with one subfolder of images per class, Animals-10 names translated, optional
                         metadata.jsonl captions (folder.py); decoded once into a memory-mapped cache (cache.py)
                         with the transforms of transforms.py; bad files skipped with a warning.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ddpm.common.errors import UserError
from ddpm.common.pixels import to_model_range
from ddpm.config import DataConfig, field_check
from ddpm.data import shapes_text
from ddpm.data.builtin import ANIMAL_SHAPE_CLASSES, BUILTIN, fit_builtin, load_animal_shapes
from ddpm.data.cache import MappedImages, open_cache
from ddpm.data.folder import scan_folder
from ddpm.data.shapes_text import SHAPES_TEXT
from ddpm.data.transforms import CROPS, DecodeSpec, luma, parse_background, random_crop, random_hflip, resize_square


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
    mirror: bool = True  # False when a left-right mirror would contradict the captions ("on the left")

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, idx: torch.Tensor, generator: torch.Generator, hflip: bool) -> torch.Tensor:
        """Images idx as the model sees them: (B, C, S, S) float in [-1, 1], randomly cropped, and mirrored when
        `hflip` asks and the data allows it (`mirror`)."""
        x = self.images[idx]  # (B, C, P, P) uint8
        if self.crop == "random":
            x = random_crop(x, self.size, generator)
        x = to_model_range(x)
        return random_hflip(x, generator) if hflip and self.mirror else x


def load_image_folder(root: Path, spec: DecodeSpec, min_size: int = 16, cache_dir: Path | None = None,
                      progress: bool = False, workers: int | None = None) -> ImageData:
    """A class-folder or captioned tree (folder.py) through the on-disk cache (cache.py). Each skipped
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
    """Load `builtin:animal-shapes`, `builtin:shapes-text` or a folder tree as uint8 (N, channels, P, P) with P = image_size (or larger
    for random crops, see transforms.py); `options` gives crop, background and minimum size for folders."""
    problem = field_check("data", "source")(source)  # "" would be the current folder
    if problem:
        raise UserError(f"the dataset must be {problem}, got {source!r}")
    if source == SHAPES_TEXT:
        return load_shapes_text(split, image_size, channels)
    if source.startswith("builtin:"):
        if source != BUILTIN:
            raise UserError(f"unknown built-in dataset {source!r}; the built-in datasets are {BUILTIN} and "
                            f"{SHAPES_TEXT}")
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


def load_shapes_text(split: str, image_size: int, channels: int) -> ImageData:
    """`builtin:shapes-text`'s split `train`, `test` (seen then held-out scenes), `test-seen` or `test-held-out`:
    each scene's captions, labels = its first object's shape; resized when image_size is not 32, grey (ITU-R 601
    luma) for 1 channel; never mirrored (captions say left and right)."""
    try:
        scenes = shapes_text.split_scenes(split)
    except ValueError as e:
        raise UserError(str(e)) from None
    x = resize_square(torch.from_numpy(shapes_text.split_images(split)), image_size)  # (N, 3, S, S) uint8
    if channels == 1:
        x = luma(x)
    return ImageData(x.contiguous(), torch.from_numpy(shapes_text.labels(scenes)), list(shapes_text.SHAPES),
                     captions=[shapes_text.captions(s) for s in scenes], size=image_size, mirror=False)
