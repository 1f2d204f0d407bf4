"""The two ways this project derives seeds from integers. Neither may change: their values are baked into what runs
have already written.

  mixed_seed       numpy's SeedSequence hash of a tuple of integers, 63 bits. It seeds each generated image
                   (`sample_seed`) and training's per-sample and per-rank generators.
  data_order_seed  the older polynomial h = (...(seed * P + s_1) * P + s_2 ...) mod 2^63, P = 1_000_003. It seeds
                   the order of the training data (ddpm.data.batches), so it is kept, though weaker (see below), for
                   compatibility: a snapshot stores only (epoch, offset) and must resume with the same batches, and
                   the demo's checkpoint must come out byte-identical.

The two cannot become one without changing every batch order. The polynomial's weakness: torch's CPU generator
(mt19937) is seeded with seed mod 2^32 only, and P is odd, so seeds that agree mod 2^32 give the same data order;
SeedSequence has no such collisions.
"""

from __future__ import annotations

import numpy as np

DATA_ORDER_MULTIPLIER = 1_000_003  # P
DATA_ORDER_MODULUS = 2**63


def mixed_seed(*ints: int) -> int:
    """An independent 63-bit seed per tuple of non-negative integers: the first two 32-bit words of numpy's
    SeedSequence(ints), read as one little-endian uint64, shifted right by one bit."""
    return int(np.random.SeedSequence(list(ints)).generate_state(2, dtype=np.uint32).view(np.uint64)[0]) >> 1


def sample_seed(seed: int, index: int) -> int:
    """Seed of image `index` in a run with seed `seed`: mixed_seed(seed, index)."""
    return mixed_seed(seed, index)


def data_order_seed(seed: int, *stream: int) -> int:
    """Seed of a data-order stream: Horner's polynomial h = seed, h <- h P + s for each s in `stream`, then
    h mod 2^63 (in [0, 2^63), so any integers are valid for torch.Generator.manual_seed).

    One scheme for both batch streams: the plain stream used to seed with seed P + epoch unreduced, which differs
    from this value only when it lies outside [0, 2^63). torch's CPU generator keeps that seed's low 32 bits alone,
    and 2^63 is a multiple of 2^32, so both seeds give the same permutations wherever the old one was accepted
    (-2^63 <= h < 2^64); tests/test_seeding.py checks it."""
    h = seed
    for s in stream:
        h = h * DATA_ORDER_MULTIPLIER + s
    return h % DATA_ORDER_MODULUS
