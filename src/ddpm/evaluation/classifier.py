"""A small domain classifier, trained on the dataset, to ask whether samples of class c look like class c.

`ddpm eval` uses it for per-class accuracy of conditional samples, the classifier score (IS's formula with this
classifier: a domain number, not comparable with any published IS) and a classifier-feature FID (on its
penultimate 128-d features). Saved as one safetensors file with its config (sizes, class names, held-out accuracy)
in the metadata, so loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ddpm.common.errors import UserError
from ddpm.common.files import UnreadableFile, read_safetensors, write_safetensors
from ddpm.common.parse import json_value
from ddpm.common.pixels import to_model_range
from ddpm.common.weights import build_with_weights
from ddpm.config import field_check
from ddpm.data.dataset import ImageData, load_dataset


@dataclass
class ClassifierConfig:
    image_size: int
    channels: int
    class_names: list[str]
    width: int = 32
    source: str = ""  # dataset it was trained on
    test_accuracy: float = float("nan")  # on the held-out split
    format_version: int = 1

    def __post_init__(self) -> None:
        """A ValueError (one line) for a field no classifier has: its sizes are checked as a run's (config.py)."""
        for name, (section, key) in {"image_size": ("model", "image_size"), "channels": ("model", "channels"),
                                     "class_names": ("data", "class_names"), "width": ("model", "base_channels")}.items():
            problem = field_check(section, key)(getattr(self, name))
            if problem:
                raise ValueError(f"{name} must be {problem}, got {getattr(self, name)!r}"[:200])
        if not self.class_names:
            raise ValueError("class_names must name at least one class")


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


class DomainClassifier(nn.Module):
    """Three conv blocks (w, 2w, 4w channels, two 2x downsamplings), global average pool, dropout, linear."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.body = nn.Sequential(_block(config.channels, w), nn.MaxPool2d(2), _block(w, 2 * w), nn.MaxPool2d(2),
                                  _block(2 * w, 4 * w))
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(4 * w, len(config.class_names)))

    @property
    def num_features(self) -> int:
        return 4 * self.config.width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [-1, 1] -> (B, 4w) pooled penultimate features."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, K) logits

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        c = self.config
        if images.dtype != torch.uint8 or images.shape[1:] != (c.channels, c.image_size, c.image_size):
            raise UserError(f"the classifier takes {c.channels}x{c.image_size}x{c.image_size} images, got "
                            f"{'x'.join(map(str, images.shape[1:]))}; train one at this size with ddpm classifier train")
        return to_model_range(images.to(next(self.parameters()).device))

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> (N, K) float64 softmax probabilities."""
        return self.eval()(self._input(images)).double().softmax(1)

    @torch.no_grad()
    def pooled_features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> (N, 4w) float32 penultimate features."""
        return self.eval().features(self._input(images)).float()

    @property
    def name(self) -> str:
        """Identifies these weights (for the reference-feature cache)."""
        h = hashlib.sha256(json.dumps(asdict(self.config), sort_keys=True).encode())
        for key, value in sorted(self.state_dict().items()):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
        return f"classifier-{h.hexdigest()[:16]}"


@torch.no_grad()
def accuracy(model: DomainClassifier, data: ImageData, batch_size: int = 256) -> float:
    """Fraction of data's images labelled correctly."""
    correct = 0
    for start in range(0, len(data), batch_size):
        images = torch.as_tensor(data.images[start:start + batch_size])
        correct += int((model.probabilities(images).argmax(1) == data.labels[start:start + batch_size]).sum())
    return correct / len(data)


def train_classifier(train: ImageData, test: ImageData, source: str, epochs: int = 4, batch_size: int = 128,
                     lr: float = 3e-3, width: int = 32, seed: int = 0, device: torch.device | str = "cpu",
                     progress: Callable[[str], None] | None = None) -> DomainClassifier:
    """AdamW with a one-cycle cosine LR, random horizontal flips (as in diffusion training) and 1-2 px shifts;
    records the accuracy on `test` in the config."""
    if len(train) == 0 or len(test) == 0:
        raise UserError("the classifier needs images in both the train and the test split")
    size, channels = train.images.shape[-1], train.images.shape[1]
    torch.manual_seed(seed)
    model = DomainClassifier(ClassifierConfig(size, channels, list(train.class_names), width, source)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(train) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=g)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            x = to_model_range(torch.as_tensor(train.images[idx])).to(device)  # (B, C, S, S) in [-1, 1]
            x = torch.where(torch.rand(len(x), 1, 1, 1, generator=g).to(device) < 0.5, x.flip(-1), x)
            dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(x), train.labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if progress is not None:
            progress(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)")
    model.config.test_accuracy = accuracy(model, test)
    return model.eval()


def save_classifier(model: DomainClassifier, path: str | Path) -> Path:
    """Write the classifier atomically (common.files) as one safetensors file; returns its path."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(path, model.state_dict(), metadata={"ddpm_classifier": json.dumps(asdict(model.config))})
    return path


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> DomainClassifier:
    """A classifier saved by save_classifier; a one-line UserError for a missing or foreign file."""
    path = Path(path).expanduser()
    hint = "train one with: ddpm classifier train --data DATA --out CLF"
    if not path.is_file():
        raise UserError(f"classifier {path} does not exist; {hint}")
    try:
        state, metadata = read_safetensors(path)
    except UnreadableFile as e:
        raise UserError(f"{path} is not a safetensors file ({e.reason}); {hint}") from None
    meta = metadata.get("ddpm_classifier")
    if meta is None:
        raise UserError(f"{path} is not a ddpm classifier; {hint}")
    try:  # the config checked, then the weights against it before the network is given memory (common/weights.py)
        config = ClassifierConfig(**json_value(meta))
        model = build_with_weights(lambda: DomainClassifier(config), state)
    except (ValueError, TypeError, RuntimeError) as e:
        raise UserError(f"{path} is a damaged ddpm classifier ({str(e).strip().splitlines()[0][:200]}); {hint}") from None
    return model.to(device).eval()


def holdout(data: ImageData, every: int = 10) -> tuple[ImageData, ImageData]:
    """For a dataset without a fixed test split (a folder): every `every`-th image of each class is held out."""
    rank = torch.zeros_like(data.labels)
    for c in range(len(data.class_names)):
        idx = torch.nonzero(data.labels == c).flatten()
        rank[idx] = torch.arange(len(idx))
    test = rank % every == every - 1

    def subset(mask: torch.Tensor) -> ImageData:
        idx = torch.nonzero(mask).flatten()
        return ImageData(torch.as_tensor(data.images[idx]), data.labels[idx], list(data.class_names))

    return subset(~test), subset(test)


def classifier_splits(source: str, image_size: int, channels: int, cache_dir: Path | None = None,
                      progress: bool = False) -> tuple[ImageData, ImageData]:
    """(train, test) for the domain classifier: the built-in dataset's fixed splits, or a folder's images with every
    10th image of each class held out (`holdout`)."""
    train = load_dataset(source, image_size, channels, "train", cache_dir=cache_dir, progress=progress)
    if source.startswith("builtin:"):
        return train, load_dataset(source, image_size, channels, "test", cache_dir=cache_dir)
    return holdout(train)
