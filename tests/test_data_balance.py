"""Class-balanced batch streams: exact proportions per epoch, determinism, resumption from (epoch, offset)."""

import torch

from ddpm.data.batches import BalancedBatchStream, BatchStream, describe, make_stream

LABELS = torch.tensor([0] * 70 + [1] * 20 + [2] * 10)  # 70 / 20 / 10 %


def test_each_class_is_drawn_equally_often_per_epoch():
    s = BalancedBatchStream(LABELS, batch_size=10, seed=0)
    assert s.draws_per_class == 34 and s.epoch_length == 102
    epoch = torch.cat([s.next() for _ in range(51)])  # 510 draws = exactly 5 epochs
    for e in range(5):
        counts = torch.bincount(LABELS[epoch[e * 102 : (e + 1) * 102]], minlength=3)
        assert counts.tolist() == [34, 34, 34]
    per_image = torch.bincount(epoch[:102], minlength=100)[90:]  # class 2 has 10 images for 34 draws
    assert sorted(per_image.tolist()) == [3] * 6 + [4] * 4
    majority = epoch[:102][LABELS[epoch[:102]] == 0]
    assert len(set(majority.tolist())) == 34  # a subset of distinct images, not repeats


def test_balanced_stream_is_deterministic_and_resumable():
    a = BalancedBatchStream(LABELS, 16, seed=7)
    batches = [a.next() for _ in range(15)]  # crosses two epoch boundaries
    b = BalancedBatchStream(LABELS, 16, seed=7)
    assert all(torch.equal(b.next(), x) for x in batches)
    c = BalancedBatchStream(LABELS, 16, seed=7)
    for _ in range(8):
        c.next()
    resumed = BalancedBatchStream(LABELS, 16, seed=7, **c.state())
    assert all(torch.equal(resumed.next(), x) for x in batches[8:])
    other = BalancedBatchStream(LABELS, 16, seed=8)
    assert not torch.equal(other.next(), batches[0])


def test_make_stream_and_epoch_description():
    plain = make_stream(LABELS, 8, 0, balance=False)
    assert isinstance(plain, BatchStream) and describe(plain) == "epoch = 100 images"
    bal = make_stream(LABELS, 8, 0, balance=True)
    assert describe(bal) == "balanced classes: epoch = 3 classes x 34 draws = 102 images"
