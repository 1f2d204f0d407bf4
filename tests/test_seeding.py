"""ddpm.common.seeding: both schemes against their formulas recomputed here and against values earlier versions wrote;
the batch streams' orders against the formulas they were first written with."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from ddpm.common.seeding import data_order_seed, mixed_seed, sample_seed
from ddpm.data.batches import BalancedBatchStream, BatchStream

P = 1_000_003
LABELS = torch.tensor([0] * 7 + [1] * 3 + [2] * 2)
BIG = 2**63 // P + 1  # the smallest seed with seed * P >= 2^63: where the reduction mod 2^63 matters


def _seed_sequence_63(*ints: int) -> int:
    """SeedSequence(ints)'s first two 32-bit words w0, w1 read as the little-endian w0 + 2^32 w1, top bit dropped."""
    w = np.random.SeedSequence(list(ints)).generate_state(2, dtype=np.uint32)
    return (int(w[0]) + (int(w[1]) << 32)) >> 1


def _polynomial(seed: int, *stream: int) -> int:
    """seed P^n + s_1 P^(n-1) + ... + s_n mod 2^63, by explicit powers rather than Horner's rule."""
    n = len(stream)
    return (seed * P**n + sum(s * P ** (n - 1 - i) for i, s in enumerate(stream))) % 2**63


def _draws(seed: int) -> list[int]:
    return torch.randint(2**62, (8,), generator=torch.Generator().manual_seed(seed)).tolist()


# ---------------------------------------------------------------------------------------------------------------
# mixed_seed: numpy's SeedSequence
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ints", [(0,), (0, 0), (1, 7), (7, 1), (3, 0x7452, 0, 12), (3, 0x7452, 1, 2, 40), (2**40, 5)])
def test_mixed_seed_is_seed_sequence(ints: tuple[int, ...]) -> None:
    got = mixed_seed(*ints)
    assert got == _seed_sequence_63(*ints)
    assert 0 <= got < 2**63


def test_seeds_written_before_are_unchanged() -> None:
    """Values of the per-image and training seeds as earlier versions computed them."""
    assert [sample_seed(0, 0), sample_seed(0, 1), sample_seed(7, 3), sample_seed(2**40, 123456)] == [
        7896617691693857887, 2918264622725855778, 2530781778362038830, 654904919763798096,
    ]
    assert mixed_seed(1, 0x7452, 0, 5) == 2524721044685679509  # training: per-sample generator of sample 5
    assert mixed_seed(1, 0x7452, 1, 0, 10) == 8178331850104766313  # training: rank 0's global RNG at step 10


def test_sample_seed_is_mixed_seed_of_the_pair() -> None:
    for seed in range(3):
        for index in range(20):
            assert sample_seed(seed, index) == _seed_sequence_63(seed, index)


# ---------------------------------------------------------------------------------------------------------------
# data_order_seed: the polynomial
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 7, 123456, -3, BIG, 2**62, 2**70, -(2**70)])
@pytest.mark.parametrize("stream", [(), (0,), (5,), (5, 0), (5, 3), (2, 1, 9)])
def test_data_order_seed_is_the_polynomial(seed: int, stream: tuple[int, ...]) -> None:
    got = data_order_seed(seed, *stream)
    assert got == _polynomial(seed, *stream)
    assert 0 <= got < 2**63


def test_torch_cpu_generators_seed_from_the_low_32_bits() -> None:
    """The fact that lets one polynomial serve both streams: a CPU generator seeded with h draws as one seeded with
    any h' = h mod 2^32 (negative seeds taken mod 2^64), so h and h mod 2^63 give the same draws."""
    for h in (5, 2**40 + 5, 2**63 + 5, 2**64 - 5, -5, -(2**63)):
        assert _draws(h) == _draws(h % 2**63) == _draws(h % 2**32), h
    assert _draws(5) != _draws(6)


@pytest.mark.parametrize(
    ("seed", "epoch"),
    [(0, 0), (3, 1), (7, 5), (123456, 99), (-3, 2), (BIG, 0), (BIG, 17), (2**64 // P - 1, 3), (-(2**63 // P), 0)],
)
def test_batch_stream_order_is_unchanged(seed: int, epoch: int) -> None:
    """BatchStream's epoch is still the permutation first written as randperm seeded with seed P + epoch, now that
    it takes its generator from the polynomial, reduced mod 2^63, of the balanced stream."""
    n = 50
    h = seed * P + epoch
    assert -(2**63) <= h < 2**64  # the seeds the first formula accepted
    expected = torch.randperm(n, generator=torch.Generator().manual_seed(h))
    assert torch.equal(BatchStream(n, n, seed, epoch=epoch).next(), expected)


def test_plain_stream_seed_equals_the_formula_or_draws_alike() -> None:
    """For seed and epoch anywhere the first formula accepted: data_order_seed(seed, epoch) is seed P + epoch when that
    lies in [0, 2^63), and otherwise seeds a generator that draws the same."""
    rng = random.Random(0)
    seeds = [0, 1, BIG - 1, BIG, -1, -(2**63 // P)] + [rng.randrange(-(2**63 // P), 2**64 // P - 1) for _ in range(60)]
    reduced = 0
    for seed in seeds:
        for epoch in range(4):
            h = seed * P + epoch
            if 0 <= h < 2**63:
                assert data_order_seed(seed, epoch) == h
            else:
                reduced += 1
                assert _draws(data_order_seed(seed, epoch)) == _draws(h), (seed, epoch)
    assert reduced > 100  # the sweep does reach the seeds where the reduction matters


def test_stream_orders_written_before_are_unchanged() -> None:
    """First batches (two epochs each) as earlier versions drew them."""
    balanced = {
        0: [10, 0, 9, 11, 9, 7, 1, 10, 3, 6, 11, 8, 11, 11, 5, 1, 10, 7, 7, 9, 3, 10, 8, 4],
        7: [10, 10, 9, 11, 0, 7, 8, 2, 7, 5, 11, 4, 5, 9, 10, 7, 8, 2, 11, 11, 3, 10, 0, 9],
        2**62: [10, 0, 9, 11, 9, 7, 1, 10, 3, 6, 11, 8, 11, 11, 5, 1, 10, 7, 7, 9, 3, 10, 8, 4],  # = seed 0 mod 2^32
    }
    for seed, order in balanced.items():
        assert BalancedBatchStream(LABELS, 24, seed=seed).next().tolist() == order, seed
    plain = {
        0: [8, 0, 5, 9, 7, 4, 2, 10, 3, 1, 11, 6, 1, 4, 6, 8, 11, 0, 5, 3, 2, 9, 10, 7],
        7: [5, 8, 6, 9, 1, 2, 3, 7, 0, 10, 11, 4, 10, 4, 11, 2, 5, 8, 6, 7, 3, 0, 1, 9],
    }
    for seed, order in plain.items():
        assert BatchStream(12, 24, seed=seed).next().tolist() == order, seed
