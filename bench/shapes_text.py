"""The figures docs/text.md quotes for builtin:shapes-text: generation time of the train split, the probe's training
time and its accuracy on the real test renders, the scores of noise and constant images, the chance levels and the
number of distinct captions, and the probe on blurred and noisy renders. One CPU thread; the probe is trained afresh in a temporary cache.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/shapes_text.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from ddpm.data import shapes_text as st
from ddpm.evaluation.faithfulness import eval_scenes, faithfulness
from ddpm.evaluation.scene_probe import load_probe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    took = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        scenes = st.sample_scenes(st.TRAIN_SCENES, st.SEEN, seed=0, two_objects=st.TRAIN_TWO_OBJECTS_P)
        np.concatenate([st.render(scenes[i:i + 4096]) for i in range(0, len(scenes), 4096)])
        took.append(time.perf_counter() - t0)
    print(f"train split ({st.TRAIN_SCENES:,} scenes, scenes + renders): median {statistics.median(took):.1f} s "
          f"of {', '.join(f'{t:.1f}' for t in took)}")
    print(f"distinct captions in train: {len({c for s in scenes for c in st.captions(s)}):,}")
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        probe = load_probe(Path(cache), progress=print)
        print(f"probe trained in {time.perf_counter() - t0:.1f} s (renders of the probe split included)")
    ev = eval_scenes(st.TEST_SCENES, st.TEST_SCENES)
    real = st.render(list(ev.scenes))
    rng = np.random.default_rng(0)
    for blur, noise in ((0.5, 0), (1.0, 0), (1.0, 20), (1.5, 0), (2.0, 0)):  # PIL's Gaussian blur (std, px), noise
        soft = np.stack([np.asarray(Image.fromarray(im.transpose(1, 2, 0)).filter(ImageFilter.GaussianBlur(blur)))
                         .transpose(2, 0, 1) for im in real]).astype(np.float32)
        soft = np.clip(soft + rng.normal(0, noise, soft.shape), 0, 255).round().astype(np.uint8)
        r = faithfulness(soft, ev.scenes, probe)
        print(f"test renders blurred (std {blur} px) + noise (std {noise}/255): "
              + ", ".join(f"{a} {r.seen[a]:.1%} / {r.held_out[a]:.1%}" for a in ("colour", "shape", "count", "position")))
    for label, ev in (("all 1,000 + 1,000 test renders", ev),
                      ("default eval set, 100 + 100", eval_scenes())):
        real = st.render(list(ev.scenes))
        shape = real.shape
        for kind, images in (("renders", real),
                             ("uniform noise", np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)),
                             ("black", np.zeros(shape, np.uint8)), ("grey 128", np.full(shape, 128, np.uint8))):
            print(f"\n{label}: {kind}")
            print("\n".join(faithfulness(images, ev.scenes, probe).lines()))


if __name__ == "__main__":
    main()
