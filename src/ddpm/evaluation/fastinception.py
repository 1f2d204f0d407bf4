"""The Inception network of features.py rebuilt for inference: the same weights and pools, fewer and faster ops.

`default_1.pt` runs every layer as conv -> batch norm -> ReLU, NCHW, one op each (read its `.code`: Conv2dLayer,
InceptionA-E). Rebuilt here from the file's own tensors, in eager PyTorch:

  * batch norm folded into the convolution. The file's layer is y = relu((W * x - mean) / sqrt(var + eps) + beta)
    with eps = 1e-3 and no scale (gamma = 1), so with s = 1 / sqrt(var + eps) per output channel:
        W' = W s,   b' = beta - mean s        (computed in float64, stored in float32)
    and y = relu(W' * x + b'): one convolution with a bias and an in-place ReLU.
  * the 1x1 convolutions of a block that read the same input (three in InceptionA, C and E, two in D) run as one
    convolution over their stacked weights, whose output is split by channel: each output channel is the same sum
    as before, and one larger matrix product uses the CPU better than three small ones.
  * channels_last (NHWC) activations: oneDNN's convolutions and the pools run faster in it on a CPU.

The pools are the file's own TorchScript modules (their kernel, stride, padding and count_include_pad are in
their code, not in attributes), so nothing of the network is restated but the wiring of InceptionE.
tests/test_eval_features.py checks the features against the file's own forward on a fixed batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # the file's batch_norm(..., eps=0.001)


class ConvReLU(nn.Module):
    """relu(conv2d(x, W', b')): a Conv2dLayer of the file with its batch norm folded in (see the module doc)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride: int, padding: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("weight", weight.contiguous())  # (C_out, C_in, kh, kw)
        self.register_buffer("bias", bias.contiguous())  # (C_out,)
        self.stride, self.padding = stride, padding

    @classmethod
    def folded(cls, layer: torch.jit.ScriptModule) -> ConvReLU:
        w, beta, mean, var = (getattr(layer, k).detach().double() for k in ("weight", "beta", "mean", "var"))
        s = (var + BN_EPS).rsqrt()  # (C_out,) 1 / sqrt(var + eps)
        pad = layer.padding if isinstance(layer.padding, (list, tuple)) else (layer.padding, layer.padding)
        return cls((w * s[:, None, None, None]).float(), (beta - mean * s).float(), int(layer.stride), tuple(pad))

    @classmethod
    def stacked(cls, convs: list[ConvReLU]) -> ConvReLU:
        """Several 1x1 ConvReLUs over the same input as one (output channels in the order given)."""
        return cls(torch.cat([c.weight for c in convs]), torch.cat([c.bias for c in convs]), 1, (0, 0))

    @property
    def pointwise(self) -> bool:
        """A 1x1 convolution of stride 1."""
        return tuple(self.weight.shape[2:]) == (1, 1) and self.stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding).relu_()


class Branches(nn.Module):
    """InceptionA-D: the concatenation (by channel) of branches over the same input, each a chain of layers; the
    branches' leading 1x1 convolutions run as one (`ConvReLU.stacked`)."""

    def __init__(self, branches: list[list[nn.Module]]) -> None:
        super().__init__()
        lead = [i for i, b in enumerate(branches) if isinstance(b[0], ConvReLU) and b[0].pointwise]
        self.lead = lead if len(lead) > 1 else []
        self.first = ConvReLU.stacked([branches[i][0] for i in self.lead]) if self.lead else None
        self.sizes = [branches[i][0].weight.shape[0] for i in self.lead]
        self.branches = nn.ModuleList(nn.Sequential(*(b[1:] if i in self.lead else b)) for i, b in enumerate(branches))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads = dict(zip(self.lead, self.first(x).split(self.sizes, 1))) if self.first is not None else {}
        return torch.cat([b(heads[i]) if i in heads else b(x) for i, b in enumerate(self.branches)], 1)


class BlockE(nn.Module):
    """InceptionE (mixed_9, mixed_10), wired as the file's code: 1x1 -> {1x3, 3x1}, 1x1 -> 3x3 -> {1x3, 3x1}, pool
    -> 1x1, and a plain 1x1; the three 1x1 convolutions on the input run as one."""

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        super().__init__()
        self.first = ConvReLU.stacked([layers["conv"], layers["tower_conv"], layers["tower_1_conv"]])
        self.sizes = [layers[k].weight.shape[0] for k in ("conv", "tower_conv", "tower_1_conv")]
        self.layers = nn.ModuleDict({k: v for k, v in layers.items() if k not in ("conv", "tower_conv", "tower_1_conv")})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.layers
        plain, a, b = self.first(x).split(self.sizes, 1)
        b = m["tower_1_conv_1"](b)  # 3x3
        return torch.cat([plain, m["tower_mixed_conv"](a), m["tower_mixed_conv_1"](a), m["tower_1_mixed_conv"](b),
                          m["tower_1_mixed_conv_1"](b), m["tower_2_conv"](m["tower_2_pool"](x))], 1)


def _rebuild(module: torch.jit.ScriptModule) -> nn.Module | list[nn.Module]:
    kind = module.original_name
    if kind == "Conv2dLayer":
        return ConvReLU.folded(module)
    if kind in ("MaxPool2d", "AvgPool2d"):
        return module  # the file's own pool
    children = {name: _rebuild(child) for name, child in module.named_children()}
    if kind == "Sequential":
        return list(children.values())
    if kind in ("InceptionA", "InceptionB", "InceptionC", "InceptionD"):
        return Branches([c if isinstance(c, list) else [c] for c in children.values()])
    if kind == "InceptionE":
        return BlockE(children)
    raise ValueError(f"unknown layer {kind} in the Inception file")


class FastInception(nn.Module):
    """float (N, 3, 299, 299) in the TF range -> (N, 2048) pool features, as `default_1.pt` gives them (to float32
    rounding), from that file's ScriptModule."""

    def __init__(self, script: torch.jit.ScriptModule) -> None:
        super().__init__()
        layers = [_rebuild(child) for _, child in script.net.layers.named_children()]
        self.layers = nn.Sequential(*layers).eval().to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)  # (N, 3, 299, 299), NHWC in memory
        return self.layers(x).flatten(1)  # (N, 2048, 1, 1) -> (N, 2048)
