"""Where, in what precision and on how many CPU threads to compute: the device a flag names, what the hardware
supports, and its settings."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import torch

from ddpm.common.errors import UserError
from ddpm.config import PRECISIONS


def mps_available() -> bool:
    """Whether an Apple-silicon GPU (Metal Performance Shaders) is usable by this torch."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when visible, else Apple MPS when available, else CPU), `cpu`, `cuda[:N]` or `mps`; a bad or
    unavailable name is a UserError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if device.type == "mps" and not mps_available():
        raise UserError("--device mps was asked for but this torch has no usable Apple MPS; use --device cpu")
    return device


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as oneDNN reports it."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bf16_supported(device: torch.device) -> bool:
    """Native bf16: CUDA compute capability >= 8.0 (A100, RTX 30xx and later; torch.cuda.is_bf16_supported() also
    says True on older GPUs, where bf16 is emulated and slow), or a CPU with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and cpu_native_bf16()


class Precision(NamedTuple):
    """The precision a run trains in and why it was chosen (for the start-up line)."""

    name: str  # fp32 | bf16 | fp16
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """The precision to train in, and why. `fp32`, `bf16`, `fp16`: as asked. `auto`:
        CUDA, capability >= 8.0      bf16 (native)
        CUDA, capability <  8.0      fp16 with loss scaling (T4 7.5, V100 7.0: fast fp16, bf16 only emulated)
        CPU with AVX512-BF16 or AMX  bf16 (native)
        Apple MPS, other CPUs        fp32"""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    if precision == "bf16" and not bf16_supported(device):
        return Precision("bf16", "as asked; emulated here, slow")
    if precision != "auto":
        return Precision(precision, "as asked")
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) >= (8, 0):
            return Precision("bf16", f"native on CUDA capability {major}.{minor}")
        return Precision("fp16", f"CUDA capability {major}.{minor} has no native bf16")
    if device.type == "mps":
        return Precision("fp32", "auto on Apple MPS")
    if bf16_supported(device):
        return Precision("bf16", "native on this CPU")
    return Precision("fp32", "no native bf16 here")


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: Precision) -> torch.autocast:
    """The forward pass's autocast: bf16 or fp16 matmuls and convolutions, fp32 where torch keeps it; off in fp32."""
    dtype = AUTOCAST_DTYPES.get(precision.name)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


@contextlib.contextmanager
def cpu_threads(threads: int) -> Iterator[int]:
    """Within the block torch uses `threads` CPU threads (0: leave torch's default); yields the count in use and
    restores the previous count after."""
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if threads > 0:
            torch.set_num_threads(before)


def configure_device(device: torch.device) -> None:
    """On CUDA: TF32 for fp32 matmuls and convolutions (bf16 autocast covers most of the step; TF32 the rest) and
    cuDNN autotuning (every step has the same shapes). Nothing to do on CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def to_device(batch: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Host tensors to `device`; to CUDA from pinned memory without blocking (the copy overlaps the host's work)."""
    if device.type != "cuda":
        return tuple(v.to(device) for v in batch)
    return tuple(v.pin_memory().to(device, non_blocking=True) for v in batch)

