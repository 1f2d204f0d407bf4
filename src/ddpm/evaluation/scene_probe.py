"""A small CNN that reads the layout of a `builtin:shapes-text` image: which shape, if any, sits at each of the five
places (left, right, top, bottom, centre). Count and position are read off the occupied places, the shape of an
object off the place its caption names (faithfulness.py).

Input: the brightest channel, max(R, G, B), in [-1, 1], so the probe is colour-blind by construction: every palette
colour has a channel >= 230 and every background pixel is <= 70, so a shape looks the same in any colour, and a
held-out pair (a green triangle) is as easy for it as a seen one. Colour is measured from the pixels instead.
Output: (B, 5 places, 5 classes) logits, class 0 = empty, 1 + i = SHAPES[i].

Trained on renders of the `probe` split (all 24 colour-shape pairs, its own seed), blurred, dimmed and noised at
random (`degrade`) so that soft or noisy samples read as the renders do. One safetensors file (117 KB), named by the
generator's version and this file's PROBE_VERSION, ships in the package (probes/), so that the first text demo does
not spend a minute training it; `python -m ddpm.evaluation.scene_probe` writes it anew (after a change to either
version, which a test asks for). Without a packaged file of these versions it is trained on first use and cached in
the cache dir (common.files).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ddpm.common.files import UnreadableFile, read_safetensors, write_safetensors
from ddpm.common.weights import build_with_weights
from ddpm.data.cache import default_cache_dir
from ddpm.data.shapes_text import GENERATOR_VERSION, POSITIONS, SHAPES, Scene, split_images, split_scenes
from ddpm.runtime.device import cpu_threads

PROBE_VERSION = 2
EMPTY = 0  # class of a place with no object; shape i is class 1 + i
PLACES, CLASSES = len(POSITIONS), 1 + len(SHAPES)


class SceneProbe(nn.Module):
    """Three 3x3 convs (w, 2w, 2w channels; 2x max-pools after the first two), then a linear read-out of the 8 x 8
    map, which keeps where things are. About 0.5 M multiply-adds an image."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, w, 16, 16)
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 2w, 8, 8)
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(2 * w * 8 * 8, PLACES * CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 1, 32, 32) in [-1, 1] -> (B, PLACES, CLASSES) logits."""
        return self.head(self.body(x).flatten(1)).view(-1, PLACES, CLASSES)


def probe_input(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 (N, 3, 32, 32) -> (N, 1, 32, 32) float in [-1, 1]: the brightest channel (colour-blind, see above)."""
    x = torch.as_tensor(images)
    return x.amax(dim=1, keepdim=True).float() / 127.5 - 1.0


def place_targets(scenes: list[Scene] | tuple[Scene, ...]) -> torch.Tensor:
    """(N, PLACES) int64: 1 + shape index at each object's position, EMPTY elsewhere."""
    out = torch.full((len(scenes), PLACES), EMPTY, dtype=torch.long)
    for i, s in enumerate(scenes):
        for o in s.objects:
            out[i, POSITIONS.index(o.position)] = 1 + SHAPES.index(o.shape)
    return out


@torch.no_grad()
def read_places(probe: SceneProbe, images: torch.Tensor | np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """uint8 (N, 3, 32, 32) -> (N, PLACES) int64: the class the probe sees at each place."""
    probe.eval()
    return torch.cat([probe(probe_input(images[i:i + batch_size])).argmax(-1)
                      for i in range(0, len(images), batch_size)]) if len(images) else torch.zeros(0, PLACES).long()


def train_probe(epochs: int = 4, batch_size: int = 256, lr: float = 5e-3, seed: int = 0,
                progress: Callable[[str], None] | None = None) -> SceneProbe:
    """Fit a SceneProbe on the `probe` split's renders: AdamW, one-cycle LR, cross-entropy summed over places. On
    one CPU thread: a network this small gains nothing from more, and on a busy CPU two threads took 4x as long."""
    with cpu_threads(1):
        return _train(epochs, batch_size, lr, seed, progress)


def _train(epochs: int, batch_size: int, lr: float, seed: int, progress: Callable[[str], None] | None) -> SceneProbe:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = probe_input(split_images("probe"))  # (N, 1, 32, 32)
    y = place_targets(split_scenes("probe"))  # (N, PLACES)
    model = SceneProbe()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            xb = degrade(x[idx], g)
            loss = F.cross_entropy(model(xb).flatten(0, 1), y[idx].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if progress is not None:
            progress(f"probe epoch {epoch + 1}/{epochs}: loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)")
    return model.eval()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x (B, 1, H, W) blurred by a Gaussian of std `sigma` px (separable, 7 taps, edges replicated)."""
    if sigma <= 0:
        return x
    taps = torch.exp(-0.5 * (torch.arange(-3, 4, dtype=x.dtype) / sigma) ** 2)
    taps = taps / taps.sum()
    x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), taps.view(1, 1, 1, 7))
    return F.conv2d(F.pad(x, (0, 0, 3, 3), mode="replicate"), taps.view(1, 1, 7, 1))


def degrade(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The training augmentation, x (B, 1, 32, 32) in [-1, 1]: what a sample may look like that a render does not.
    A Gaussian blur of std U(0, 1) px (one per batch), a contrast of U(0.7, 1) (each image) and Gaussian pixel
    noise of std U(0, 0.15) (each image, in [-1, 1] units)."""
    u = gaussian_blur((x + 1) / 2, 1.0 * float(torch.rand((), generator=g)))  # [0, 1]
    u = u * (0.7 + 0.3 * torch.rand(len(x), 1, 1, 1, generator=g))
    noise = 0.15 * torch.rand(len(x), 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)
    return 2 * u - 1 + noise


PACKAGED = Path(__file__).parent / "probes"  # the shipped probe's folder


def probe_name() -> str:
    """The file name of the probe of this generator version and this probe version."""
    return f"shapes-text-probe-g{GENERATOR_VERSION}-p{PROBE_VERSION}.safetensors"


def probe_path(cache_dir: Path | None = None) -> Path:
    """Where that probe is cached."""
    return (cache_dir or default_cache_dir()) / "probes" / probe_name()


def packaged_probe_path() -> Path:
    """Where that probe ships in the package."""
    return PACKAGED / probe_name()


def load_probe(cache_dir: Path | None = None, progress: Callable[[str], None] | None = None) -> SceneProbe:
    """The packaged probe, else the cached one, else a newly trained one (then cached; an unwritable cache only
    costs the training)."""
    path = probe_path(cache_dir)
    for candidate in (packaged_probe_path(), path):
        if candidate.is_file():
            try:
                return build_with_weights(SceneProbe, read_safetensors(candidate)[0]).eval()
            except (UnreadableFile, ValueError):  # a damaged file is skipped, at worst retrained
                pass
    model = train_probe(progress=progress)
    try:
        save_probe(model, path)
    except OSError:
        pass
    return model


def save_probe(model: SceneProbe, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(path, model.state_dict(), metadata={"generator_version": str(GENERATOR_VERSION),
                                                          "probe_version": str(PROBE_VERSION)})


if __name__ == "__main__":  # python -m ddpm.evaluation.scene_probe: train and write the packaged probe
    save_probe(train_probe(progress=print), packaged_probe_path())
    print(f"wrote {packaged_probe_path()}")
