"""Training-step throughput of our UNet against diffusers' UNet2DModel at a matched parameter count.

What is measured
    One training step as our trainer runs it (src/ddpm/training.py): ``diffusion_loss`` (q_sample, forward,
    eps-MSE) under ``torch.autocast(bf16)`` when ``resolve_precision("auto", device)`` picks bf16, then
    ``zero_grad``, backward, ``clip_grad_norm_`` and ``AdamW(foreach=True).step()`` from ``make_optimizer``.
    Left out, for every contender alike: data loading, EMA update, logging. The peer is diffusers'
    ``UNet2DModel`` (class-conditional through ``num_class_embeds``, improved-DDPM scale-shift norm, attention
    at the lowest resolution as ours), wrapped to our ``model(x, t, c)`` signature and trained by the very same
    step. Contenders: ours at the trainer's precision, the peer in its usual fp32, the peer under the same
    autocast as ours. All see the same fixed random batch (x0 in [-1, 1], class ids in [0, num_classes]).

    Timing: warm-up steps are excluded, then the contenders take turns in rounds (A B C, C B A, ...) so they
    share the machine's noise; each round gives one images/s per contender. The table shows the median (and
    min-max) over rounds; the ratios are medians of per-round ratios, each pairing steps that ran seconds apart.
    FLOPs per image of forward+backward come from ``FlopCounterMode`` (torch has no formula for CPU flash
    attention, the peer's kernel, so it is given the generic SDPA one); GFLOP/s = FLOPs/img x median img/s.
    Memory: peak memory is not reported on CPU (no allocator statistics; maxrss deltas are unreliable). The
    "act MB/img" column is what autograd saves for backward per image (deduplicated storages, parameters
    excluded; under autocast it includes the bf16 weight copies) -- a deterministic proxy, not a peak.

Run
    .venv/bin/python bench/train_throughput.py          # 32x32x1, batch 32, 8 rounds: 1-2 min on 2 busy cores
    .venv/bin/python bench/train_throughput.py --batch-size 64 --rounds 12   # steadier, 3-6 min
    .venv/bin/python bench/train_throughput.py --size 64 --channels 3   # attention stays at the lowest level (16 px)

Reading the ratio
    "same precision" is the like-for-like number: > 1 means our step processes more images per second than
    the peer's at identical precision and batch. "vs peer-fp32" compares against the peer as usually trained;
    it mixes the architecture with the precision gain. Trust a ratio only as far as its min-max over rounds:
    a range that straddles 1.0 means "no measurable difference" on this machine.
The last line printed is one JSON object with all numbers (for the docs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass, field

import diffusers
import torch
from diffusers import UNet2DModel
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from ddpm.config import ModelConfig, RunConfig
from ddpm.diffusion import diffusion_loss
from ddpm.network import UNet, count_parameters
from ddpm.schedule import NoiseSchedule
from ddpm.training import make_optimizer, resolve_precision

NUM_CLASSES = 10
aten = torch.ops.aten


class PeerAdapter(nn.Module):
    """diffusers' UNet2DModel behind our eps-model signature model(x, t, c)."""

    def __init__(self, net: UNet2DModel) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.net(x, t, class_labels=c).sample


def build_ours(size: int, channels: int) -> nn.Module:
    return UNet(ModelConfig(image_size=size, channels=channels, base_channels=32, channel_mults=(1, 2, 2),
                            num_res_blocks=2, attention_resolutions=(size // 4,), num_heads=4, num_classes=NUM_CLASSES))


def build_peer(size: int, channels: int) -> nn.Module:
    return PeerAdapter(UNet2DModel(
        sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(32, 64, 64),
        layers_per_block=2, down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=16, norm_num_groups=32,
        resnet_time_scale_shift="scale_shift", num_class_embeds=NUM_CLASSES + 1))  # + 1: the null class


@dataclass
class Contender:
    name: str
    model: nn.Module
    precision: str
    optimizer: torch.optim.Optimizer
    rates: list[float] = field(default_factory=list)  # images/s, one per round


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # x0, cond, t, noise


def train_step(c: Contender, schedule: NoiseSchedule, batch: Batch, grad_clip: float) -> None:
    """The body of training.py's loop, minus data, EMA and logging."""
    x0, cond, t, noise = batch
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=c.precision == "bf16"):
        loss, _ = diffusion_loss(c.model, schedule, x0, cond, t, noise)
    c.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(c.model.parameters(), grad_clip)
    c.optimizer.step()


def flops_per_image(model: nn.Module, schedule: NoiseSchedule, batch: Batch, n: int = 4) -> float:
    """Forward + backward FLOPs of the loss per image, counted on n images (FLOPs scale linearly with the batch).
    torch has no formula for CPU flash attention; it gets the one of the other SDPA kernels."""
    x0, cond, t, noise = (v[:n] for v in batch)
    extra = {  # the formulas receive shapes; (batch, heads, tokens, head dim) as for the other SDPA kernels
        aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *_, out_shape=None, **__: sdpa_flop_count(q, k, v),
        aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda g, q, k, v, *_, out_shape=None, **__: sdpa_backward_flop_count(g, q, k, v),
    }
    with FlopCounterMode(display=False, custom_mapping=extra) as counter:
        loss, _ = diffusion_loss(model, schedule, x0, cond, t, noise)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / n


def saved_activation_bytes(c: Contender, schedule: NoiseSchedule, batch: Batch) -> float:
    """Bytes autograd keeps for backward per image: distinct storages saved during the forward, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in c.model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=c.precision == "bf16"):
            loss, _ = diffusion_loss(c.model, schedule, *batch)
    del loss
    return sum(seen.values()) / len(batch[0])


def paired(ours: Contender, peer: Contender) -> list[float]:
    """Sorted per-round ratios ours/peer: each pairs two measurements that saw the same stretch of machine noise."""
    return sorted(o / p for o, p in zip(ours.rates, peer.rates))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=32, choices=(32, 64))
    ap.add_argument("--channels", type=int, default=1, choices=(1, 3))
    ap.add_argument("--batch-size", type=int, default=32, help="the trainer's default is 64")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps-per-round", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per contender before round 1")
    args = ap.parse_args()

    device = torch.device("cpu")
    precision = resolve_precision("auto", device)  # what `ddpm train` would use here
    tc = RunConfig().train  # lr, weight decay and grad clip of a default run
    schedule = NoiseSchedule.create("linear", 1000)
    gen = torch.Generator().manual_seed(0)
    b, shape = args.batch_size, (args.batch_size, args.channels, args.size, args.size)
    batch: Batch = (torch.rand(shape, generator=gen) * 2 - 1, torch.randint(0, NUM_CLASSES + 1, (b,), generator=gen),
                    torch.randint(0, 1000, (b,), generator=gen), torch.randn(shape, generator=gen))

    contenders = []
    for name, build, prec in (("ours", build_ours, precision), ("peer-fp32", build_peer, "fp32"),
                              ("peer-bf16", build_peer, "bf16")):
        torch.manual_seed(0)
        model = build(args.size, args.channels).train()
        contenders.append(Contender(name, model, prec, make_optimizer(model, RunConfig())))
    same = next(c for c in contenders[1:] if c.precision == precision)

    flops = {c.name: flops_per_image(c.model, schedule, batch) for c in contenders}
    act = {c.name: saved_activation_bytes(c, schedule, batch) for c in contenders}
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, {torch.get_num_threads()} threads, "
          f"trainer precision here: {precision}; batch {b}, {args.channels}x{args.size}x{args.size}, "
          f"{args.warmup} warm-up + {args.rounds} rounds x {args.steps_per_round} steps per contender")

    for c in contenders:
        for _ in range(args.warmup):
            train_step(c, schedule, batch, tc.grad_clip)
    start = time.perf_counter()
    for r in range(args.rounds):
        for c in (contenders if r % 2 == 0 else contenders[::-1]):  # alternate order: no contender always goes first
            t0 = time.perf_counter()
            for _ in range(args.steps_per_round):
                train_step(c, schedule, batch, tc.grad_clip)
            c.rates.append(args.steps_per_round * b / (time.perf_counter() - t0))
    elapsed = time.perf_counter() - start

    med = {c.name: statistics.median(c.rates) for c in contenders}
    print(f"{'contender':<11}{'precision':>10}{'params':>11}{'img/s med':>11}{'(min-max)':>15}"
          f"{'GFLOP/img':>11}{'GFLOP/s':>9}{'act MB/img':>12}")
    for c in contenders:
        print(f"{c.name:<11}{c.precision:>10}{count_parameters(c.model):>11,}{med[c.name]:>11.1f}"
              f"{f'({min(c.rates):.1f}-{max(c.rates):.1f})':>15}{flops[c.name] / 1e9:>11.3f}"
              f"{flops[c.name] * med[c.name] / 1e9:>9.1f}{act[c.name] / 2**20:>12.2f}")
    print("act MB/img: bytes saved for backward per image (a proxy); peak memory: not measured on CPU")
    ratio_same, ratio_fp32 = paired(contenders[0], same), paired(contenders[0], contenders[1])
    print(f"ours/peer, median of per-round ratios (min-max): same precision ({precision}) "
          f"{statistics.median(ratio_same):.2f}x ({ratio_same[0]:.2f}-{ratio_same[-1]:.2f}); vs peer-fp32 "
          f"{statistics.median(ratio_fp32):.2f}x ({ratio_fp32[0]:.2f}-{ratio_fp32[-1]:.2f}); "
          f"params ours/peer {count_parameters(contenders[0].model) / count_parameters(same.model):.3f}; "
          f"timed loop {elapsed:.0f}s")
    print(json.dumps({
        "bench": "train_throughput", "torch": torch.__version__, "diffusers": diffusers.__version__,
        "threads": torch.get_num_threads(), "size": args.size, "channels": args.channels, "batch_size": b,
        "rounds": args.rounds, "steps_per_round": args.steps_per_round, "warmup": args.warmup,
        "contenders": {c.name: {"precision": c.precision, "params": count_parameters(c.model),
                                "img_per_s_median": round(med[c.name], 2),
                                "img_per_s_rounds": [round(x, 2) for x in c.rates],
                                "gflop_per_img": round(flops[c.name] / 1e9, 4),
                                "gflop_per_s": round(flops[c.name] * med[c.name] / 1e9, 2),
                                "saved_act_mb_per_img": round(act[c.name] / 2**20, 3)} for c in contenders},
        "ratio_same_precision": round(statistics.median(ratio_same), 3),
        "ratio_vs_peer_fp32": round(statistics.median(ratio_fp32), 3),
        "peak_memory": None,
    }))


if __name__ == "__main__":
    main()
