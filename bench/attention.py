"""Self- and cross-attention forward + backward under bf16 autocast on this CPU: torch's fused kernel against our
explicit softmax(q k^T / sqrt(d)) v in batch chunks (ddpm.network.attention.explicit_attention) and the same explicit
form unchunked.

Why: the trainer's attend() takes the chunked path up to network.attention.EXPLICIT_MAX_TOKENS tokens and the fused
kernel beyond; the chunks hold at most network.attention.CHUNK_ELEMENTS weights. This is the measurement behind both
numbers: the chunked path is timed directly at every size, also past the cut-off. Each shape is (batch, heads,
tokens, head dim): the attention levels of the demo model (7x7), of the bench models at 32 and 64 px (8x8, 16x16)
and of the README's 64 px model, then larger maps up to 32x32 where the fused kernel should win. Then the text
models' cross-attention (CROSS_SHAPES): the same queries against 33 keys (a null token and 32 caption tokens), a
boolean mask keeping the first 1 + 4..32 of them (as captions' lengths vary), given to every contender.

    .venv/bin/python bench/attention.py                 # ~2 min on 2 cores
    .venv/bin/python bench/attention.py --threads 1 --rounds 9

Prints per shape the median ms of each contender and the median per-round ratio fused / chunked (min-max): above
1, the chunked path is faster; "attend() takes" says which one the trainer uses for that shape.
"""

from __future__ import annotations

from rounds import images_per_s_in_rounds  # bench/ is on sys.path when a script runs
import argparse
import statistics
from typing import Callable

import torch
import torch.nn.functional as F

from ddpm.network.attention import EXPLICIT_MAX_TOKENS, explicit_attention, softmax_attention

Attention = Callable[..., torch.Tensor]  # (q, k, v) or (q, k, v, keep)

SHAPES = [(64, 4, 49, 16), (32, 4, 64, 16), (64, 4, 64, 32), (64, 4, 144, 16), (64, 4, 196, 16), (16, 4, 256, 16),
          (64, 4, 256, 16), (64, 4, 256, 32), (16, 4, 400, 16), (16, 4, 576, 16), (16, 4, 784, 16), (16, 4, 1024, 16),
          (8, 4, 1296, 16)]


CROSS_SHAPES = [(64, 4, 64, 16), (64, 4, 256, 32)]  # the text demo's 8x8 (tiny preset), a 64 px model's 16x16
CROSS_KEYS = 33


def fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=None if keep is None else keep[:, None, None, :])


def contender(fn: Attention, shape: tuple[int, int, int, int], keys: int | None = None) -> Callable[[], None]:
    """fn's forward + backward on (B, heads, N, d) queries and N keys (self-attention), or `keys` keys with a
    padding mask (cross-attention)."""
    gen = torch.Generator().manual_seed(0)
    b, heads, n, d = shape
    kv_shape = shape if keys is None else (b, heads, keys, d)
    q = torch.randn(shape, generator=gen).to(torch.bfloat16).requires_grad_()
    k, v = (torch.randn(kv_shape, generator=gen).to(torch.bfloat16).requires_grad_() for _ in range(2))
    grad = torch.randn(shape, generator=gen).to(torch.bfloat16)
    keep = None if keys is None else (
        torch.arange(keys)[None, :] <= torch.randint(4, keys, (b, 1), generator=gen))  # (B, M) bool

    def run() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(q, k, v) if keep is None else fn(q, k, v, keep)
        out.backward(grad)
        q.grad = k.grad = v.grad = None

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, one per core)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"fwd+bwd, bf16 autocast, {torch.get_num_threads()} threads, {args.rounds} rounds; torch {torch.__version__}")
    print(f"{'(B, heads, N, d) [x M]':<28}{'fused ms':>10}{'chunked ms':>12}{'unchunked ms':>14}{'fused/chunked':>15}"
          f"{'(min-max)':>14}  attend() takes")
    cases = [(shape, None) for shape in SHAPES] + [(shape, CROSS_KEYS) for shape in CROSS_SHAPES]
    for shape, keys in cases:
        runs = {"fused": contender(fused, shape, keys), "chunked": contender(explicit_attention, shape, keys),
                "unchunked": contender(softmax_attention, shape, keys)}
        calls_per_s = images_per_s_in_rounds(runs, 1, args.rounds)  # 2 warm-up calls each, then alternating rounds
        ms = {name: [1e3 / rate for rate in rates] for name, rates in calls_per_s.items()}
        ratio = sorted(f / o for f, o in zip(ms["fused"], ms["chunked"]))
        med = {name: statistics.median(v) for name, v in ms.items()}
        path = "chunked" if shape[2] <= EXPLICIT_MAX_TOKENS else "fused"
        name = str(shape) if keys is None else f"{shape} x {keys}"
        print(f"{name:<28}{med['fused']:>10.1f}{med['chunked']:>12.1f}{med['unchunked']:>14.1f}"
              f"{statistics.median(ratio):>14.2f}x{f'({ratio[0]:.2f}-{ratio[-1]:.2f})':>14}  {path}", flush=True)


if __name__ == "__main__":
    main()
