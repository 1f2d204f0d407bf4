"""Alternating-rounds timing shared by the benchmarks: contenders take turns, the order reversed every other round
so that no one always runs first (on a shared machine the load drifts; per-round ratios cancel most of it)."""

from __future__ import annotations

import time
from typing import Callable


def images_per_s_in_rounds(steps: dict[str, Callable[[], object]], batch_size: int, rounds: int,
                           steps_per_round: int = 1, warmup: int = 2) -> dict[str, list[float]]:
    """Each contender's images/s in each round (batch_size images per call), after `warmup` untimed calls each."""
    names = list(steps)
    for name in names:
        for _ in range(warmup):  # kernel selection, allocator
            steps[name]()
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            for _ in range(steps_per_round):
                steps[name]()
            rates[name].append(batch_size * steps_per_round / (time.perf_counter() - t0))
    return rates
