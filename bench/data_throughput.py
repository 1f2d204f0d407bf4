"""Data-loader throughput against training-step throughput at 64x64 RGB.

What is measured
    A generated Animals-10-like folder (photo-sized JPEGs, 4:3 and 3:4, 300-500 px on the long side; smooth
    content, so JPEG decoding costs what it costs on photos) in a temporary directory:
      decode   images/s of building the preprocessing cache (decode + EXIF + mode + resize + crop, all cores):
               what a loader without the cache would have to sustain every epoch
      loader   images/s of `ImageData.batch` from the memory-mapped cache: random indices (a shuffled epoch),
               the copy out of the memmap, random crop, [-1, 1] scaling, random flip; pages warm (after the first
               epoch of a real run the cache file sits in the OS page cache)
      step     images/s of one training step as the trainer runs it (diffusion_loss + backward + clip + AdamW) on
               the README's 64x64 Animals-10 model (base 64, mults 1,2,2,2, attention at 16 and 8)
    The ratios loader/step and decode/step say how many times the step rate each can feed: the loader must be
    several times above 1 to never starve the model; decode shows why decoding every epoch is not an option.

Run
    .venv/bin/python bench/data_throughput.py                 # ~1-2 min on 2 busy cores
    .venv/bin/python bench/data_throughput.py --images 4000 --step-base-channels 32
    .venv/bin/python bench/data_throughput.py --device cuda --steps 50     # the step on a GPU, the loader on CPU
The last line printed is one JSON object with all numbers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ddpm.data.batches import BatchStream
from ddpm.config import DataConfig, ModelConfig, RunConfig
from ddpm.data.dataset import load_dataset
from ddpm.diffusion.forward import diffusion_loss
from ddpm.network.unet import UNet
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.training.optim import make_optimizer
from ddpm.runtime.device import resolve_precision


def make_folder(root: Path, n: int, classes: int = 10, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        d = root / f"class{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        long = int(rng.integers(300, 501))
        w, h = (long, long * 3 // 4) if rng.random() < 0.7 else (long * 3 // 4, long)
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        im = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        detail = rng.normal(0, 12, (h, w, 3))
        arr = np.clip(np.asarray(im, dtype=np.float64) + detail, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(d / f"{i:06d}.jpg", quality=90)


def loader_rate(data, batch_size: int, seconds: float) -> float:
    stream, gen, n, t0 = BatchStream(len(data), batch_size, 0), torch.Generator().manual_seed(0), 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x = data.batch(stream.next(), gen, hflip=True)  # (B, 3, 64, 64) float
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


def step_rate(size: int, batch_size: int, base: int, steps: int, device: torch.device) -> float:
    cfg = RunConfig(model=ModelConfig(image_size=size, channels=3, base_channels=base, channel_mults=(1, 2, 2, 2),
                                      attention_resolutions=(16, 8), num_classes=10))
    model = UNet(cfg.model).to(device)
    opt = make_optimizer(model, cfg)
    schedule = NoiseSchedule.create("linear", 1000)
    precision = resolve_precision("auto", device)
    x0 = torch.rand(batch_size, 3, size, size, device=device) * 2 - 1
    c = torch.randint(0, 10, (batch_size,), device=device)
    t, noise = torch.randint(0, 1000, (batch_size,), device=device), torch.randn_like(x0)

    def one() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, _ = diffusion_loss(model, schedule, x0, c, t, noise, "none", 5.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    one()  # warm-up
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    sync()
    return steps * batch_size / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=2000, help="JPEGs in the generated folder")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--loader-seconds", type=float, default=5.0)
    p.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up)")
    p.add_argument("--step-base-channels", type=int, default=64)
    p.add_argument("--device", default="cpu", help="where the training step runs (cpu, cuda)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "raw-img"
        t0 = time.perf_counter()
        make_folder(root, args.images)
        print(f"generated {args.images} JPEGs in {time.perf_counter() - t0:.1f} s")
        opts = DataConfig(source=str(root), crop="random")
        t0 = time.perf_counter()
        data = load_dataset(str(root), args.size, 3, options=opts, cache_dir=Path(tmp) / "cache", progress=True)
        decode = len(data) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        load_dataset(str(root), args.size, 3, options=opts, cache_dir=Path(tmp) / "cache")
        hit_s = time.perf_counter() - t0
        loader = loader_rate(data, args.batch_size, args.loader_seconds)
        cache_mb = data.images.path.stat().st_size / 2**20
    step = step_rate(args.size, args.batch_size, args.step_base_channels, args.steps, torch.device(args.device))
    print(f"\n{'':<34}{'images/s':>10}{'x step':>9}")
    print(f"{'decode (cache build, all cores)':<34}{decode:>10.0f}{decode / step:>9.1f}")
    print(f"{'loader (memmap cache)':<34}{loader:>10.0f}{loader / step:>9.1f}")
    print(f"{'training step':<34}{step:>10.1f}{1:>9.1f}")
    print(f"cache: {cache_mb:.1f} MB for {len(data)} images ({cache_mb * 2**20 / len(data) / 1024:.1f} KB each); "
          f"cache hit (scan + open) {hit_s:.2f} s")
    print(json.dumps({"images": len(data), "size": args.size, "batch_size": args.batch_size, "decode_img_s": decode,
                      "loader_img_s": loader, "step_img_s": step, "loader_over_step": loader / step,
                      "decode_over_step": decode / step, "cache_hit_s": hit_s, "cache_mb": cache_mb}))


if __name__ == "__main__":
    main()
