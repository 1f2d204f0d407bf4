"""A network rebuilt from the config a file carries, and that file's weights, checked against each other before
anything is allocated.

A checkpoint (or classifier) stores its config beside its tensors. A config that was damaged or crafted can describe
a network far larger than the tensors in the file (a layer 10**6 channels wide): building it first and loading the
weights after would allocate that network, which ends in an allocation error or in the kernel's out-of-memory killer,
not in a message. So the network is built on PyTorch's "meta" device, which records shapes and allocates nothing,
every weight's name and shape is compared with the file's, and only a network that matches its file is given memory:
as much as the file's tensors already take.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def build_with_weights(build: Callable[[], M], weights: dict[str, torch.Tensor]) -> M:
    """build() with `weights` loaded, on the CPU; a ValueError (one line, the first difference) when a weight is
    missing, unexpected or of another shape. Errors of build() itself (a config it refuses) propagate."""
    with torch.device("meta"):
        module = build()
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in weights.items()}
    for name in sorted(expected.keys() | found.keys()):
        if name not in found:
            raise ValueError(f"the weight {name} is missing")
        if name not in expected:
            raise ValueError(f"the file has a weight {name} that the config does not describe")
        if found[name] != expected[name]:
            raise ValueError(f"the weight {name} is {list(found[name])}, the config describes {list(expected[name])}")
    module.to_empty(device="cpu")  # the size of the file's tensors, which exist already
    module.load_state_dict(weights)
    return module
