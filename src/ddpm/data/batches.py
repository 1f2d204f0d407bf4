"""Endless, seeded, resumable streams of batch indices.

An epoch is a fixed order of dataset indices drawn from (seed, epoch) alone, so a stream is restored exactly from
two integers, (epoch, offset); a batch may span two epochs.
  BatchStream          epoch = a permutation of all N items: each image once.
  BalancedBatchStream  epoch = K classes x m draws, m = ceil(N / K): every class exactly m times, so each class is
                       1/K of the batches. Class c's m draws are the first m of back-to-back permutations of its
                       n_c images (n_c < m: every image floor(m/n_c) or ceil(m/n_c) times; n_c >= m: m distinct
                       images, a fresh random subset each epoch); the K*m draws are then shuffled together.
                       Stratified, so class counts are exact per epoch, unlike inverse-frequency weights.
"""

from __future__ import annotations

import math

import torch

from ddpm.common.errors import UserError
from ddpm.common.seeding import data_order_seed


def _generator(seed: int, *stream: int) -> torch.Generator:
    """The generator of one data-order stream (seed, stream ids); see ddpm.common.seeding.data_order_seed."""
    return torch.Generator().manual_seed(data_order_seed(seed, *stream))


class _EpochStream:
    """Shared mechanics: subclasses define `epoch_length` and `_order(epoch)` (a (epoch_length,) index tensor)."""

    epoch_length: int

    def __init__(self, batch_size: int, seed: int, epoch: int, offset: int) -> None:
        if self.epoch_length <= 0:
            raise UserError("the dataset is empty")
        self.batch_size, self.seed = batch_size, seed
        self.epoch, self.offset = epoch, offset
        self._perm = self._order(epoch)

    def _order(self, epoch: int) -> torch.Tensor:
        raise NotImplementedError

    def next(self) -> torch.Tensor:
        parts, need = [], self.batch_size
        while need:
            take = min(need, self.epoch_length - self.offset)
            parts.append(self._perm[self.offset : self.offset + take])
            self.offset += take
            need -= take
            if self.offset == self.epoch_length:
                self.epoch, self.offset = self.epoch + 1, 0
                self._perm = self._order(self.epoch)
        return torch.cat(parts)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}


class BatchStream(_EpochStream):
    """Each epoch visits a permutation of range(num_items) drawn from (seed, epoch)."""

    def __init__(self, num_items: int, batch_size: int, seed: int, epoch: int = 0, offset: int = 0) -> None:
        self.num_items = self.epoch_length = num_items
        super().__init__(batch_size, seed, epoch, offset)

    def _order(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.num_items, generator=_generator(self.seed, epoch))


class BalancedBatchStream(_EpochStream):
    """Each epoch draws every class equally often (see the module doc); `labels` is (N,) int64 class ids."""

    def __init__(self, labels: torch.Tensor, batch_size: int, seed: int, epoch: int = 0, offset: int = 0) -> None:
        counts = torch.bincount(labels)
        self.members = [torch.nonzero(labels == c).flatten() for c in range(len(counts)) if counts[c] > 0]
        self.draws_per_class = math.ceil(len(labels) / max(1, len(self.members)))  # m
        self.epoch_length = self.draws_per_class * len(self.members)
        super().__init__(batch_size, seed, epoch, offset)

    def _order(self, epoch: int) -> torch.Tensor:
        m, draws = self.draws_per_class, []
        for c, idx in enumerate(self.members):
            g = _generator(self.seed, epoch, c + 1)
            perms = [torch.randperm(len(idx), generator=g) for _ in range(math.ceil(m / len(idx)))]
            draws.append(idx[torch.cat(perms)[:m]])
        order = torch.cat(draws)  # (K * m,)
        return order[torch.randperm(len(order), generator=_generator(self.seed, epoch, 0))]


def make_stream(labels: torch.Tensor, batch_size: int, seed: int, balance: bool, epoch: int = 0,
                offset: int = 0) -> BatchStream | BalancedBatchStream:
    if balance:
        return BalancedBatchStream(labels, batch_size, seed, epoch, offset)
    return BatchStream(len(labels), batch_size, seed, epoch, offset)


def describe(stream: _EpochStream) -> str:
    """One line for the training log: what an epoch is."""
    if isinstance(stream, BalancedBatchStream):
        k, m = len(stream.members), stream.draws_per_class
        return f"balanced classes: epoch = {k} classes x {m:,} draws = {stream.epoch_length:,} images"
    return f"epoch = {stream.epoch_length:,} images"
