"""Where and in what precision to compute: the device a flag names, what the hardware supports, and its settings."""

from __future__ import annotations

import torch

from ddpm.common.errors import UserError


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when visible, else CPU), `cpu` or `cuda[:N]`; a bad or unavailable name is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return device


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast pays on CUDA with bf16 support and on CPUs with native bf16 (AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 where the hardware has it, else fp32; `fp32` and `bf16` as asked."""
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if precision not in ("fp32", "bf16"):
        raise UserError(f"unknown precision {precision!r}; choose auto, fp32 or bf16")
    return precision


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

