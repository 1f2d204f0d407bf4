"""The model presets (src/ddpm/presets.py) side by side: parameters, GFLOPs per image and training images/s.

What is measured, for each preset at each size (RGB, 10 classes):
    parameters     count_parameters of the UNet the preset builds at that size
    GFLOPs/img     forward only (what sampling costs per network call) and forward + backward (a training step's
                   share), counted by FlopCounterMode (bench/train_throughput.flops_per_image)
    images/s       one training step as the trainer runs it (loss, backward, clipping, fused AdamW) at the precision
                   `--precision auto` picks here, on a fixed random batch; the presets take turns in alternating
                   rounds (bench/rounds.py), median over rounds. Batch --batch (default 8) for every preset, so
                   the large ones fit a CPU; a GPU run takes the preset's own batch with --preset-batch.
Run
    .venv/bin/python bench/presets.py                      # 32 and 64 px, 3 rounds: ~10 min on 2 cores
    .venv/bin/python bench/presets.py --sizes 64 --rounds 5 --preset-batch --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rounds import images_per_s_in_rounds  # noqa: E402
from train_throughput import flops_per_image, make_batch  # noqa: E402

from ddpm.config import ModelConfig, RunConfig  # noqa: E402
from ddpm.diffusion.forward import diffusion_loss  # noqa: E402
from ddpm.diffusion.schedule import NoiseSchedule  # noqa: E402
from ddpm.network.unet import UNet, count_parameters  # noqa: E402
from ddpm.presets import PRESETS, preset_fields  # noqa: E402
from ddpm.runtime.device import configure_device, resolve_precision  # noqa: E402
from ddpm.training.optim import make_optimizer  # noqa: E402


def build(name: str, size: int, device: torch.device) -> UNet:
    fields = preset_fields(name, size)["model"]
    config = ModelConfig(image_size=size, channels=3, num_classes=10, **{
        k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    torch.manual_seed(0)
    return UNet(config).to(device).train()


def forward_flops(model: UNet, batch) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x0, cond, t, _ = (v[:2] for v in batch)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x0, t, cond)
    return counter.get_total_flops() / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--presets", nargs="+", default=list(PRESETS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--preset-batch", action="store_true", help="each preset's own batch size")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    configure_device(device)
    precision = resolve_precision("auto", device)
    schedule = NoiseSchedule.create("cosine", 1000)
    print(f"device {device}, precision {precision}, threads {torch.get_num_threads()}, torch {torch.__version__}")
    print("| preset | size | parameters | GFLOPs/img forward | GFLOPs/img train | batch | images/s (median, min-max) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        steps, info = {}, {}
        for name in args.presets:
            b = PRESETS[name].batch_size if args.preset_batch else args.batch
            batch = make_batch(b, 3, size, device, channels_last=False)
            model = build(name, size, device)
            fwd = forward_flops(model, batch)
            train = flops_per_image(model, schedule, batch, n=2)
            optimizer = make_optimizer(model, RunConfig())

            def step(model=model, batch=batch, optimizer=optimizer) -> None:
                x0, cond, t, noise = batch
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss, _ = diffusion_loss(model, schedule, x0, cond, t, noise, "min-snr", 5.0, "v")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
                optimizer.step()
                if device.type == "cuda":
                    torch.cuda.synchronize()

            steps[name] = step
            info[name] = (count_parameters(model), fwd, train, b)
        rates = images_per_s_in_rounds(steps, args.batch, args.rounds, warmup=1) if not args.preset_batch else {
            n: images_per_s_in_rounds({n: steps[n]}, info[n][3], args.rounds, warmup=1)[n] for n in steps}
        for name in args.presets:
            params, fwd, train, b = info[name]
            r = rates[name]
            print(f"| {name} | {size} | {params / 1e6:.2f}M | {fwd / 1e9:.2f} | {train / 1e9:.2f} | {b} | "
                  f"{statistics.median(r):.1f} ({min(r):.1f}-{max(r):.1f}) |", flush=True)


if __name__ == "__main__":
    main()
