import gzip
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.common.errors import UserError
from ddpm.common.pixels import to_model_range, to_uint8
from ddpm.data.batches import BatchStream
from ddpm.data.builtin import ANIMAL_SHAPE_CLASSES, _NumpyOnlyUnpickler, fit_builtin, load_animal_shapes
from ddpm.data.dataset import load_dataset
from ddpm.data.transforms import random_hflip


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_CACHE_DIR", str(tmp_path / "cache"))


def test_builtin_split_is_fixed_and_disjoint():
    xtr, ytr = load_animal_shapes("train")
    xte, yte = load_animal_shapes("test")
    assert xtr.shape[1:] == (28, 28) and xte.shape == (1000, 28, 28)
    assert len(xtr) + len(xte) == len({x.tobytes() for x in np.concatenate([xtr, xte])}) > 9500  # duplicates dropped
    assert np.bincount(yte).tolist() == [100] * 10 and np.bincount(ytr).min() > 700  # birds lose 188 duplicates
    train_rows = {x.tobytes() for x in xtr}
    assert not any(x.tobytes() in train_rows for x in xte)
    xtr2, _ = load_animal_shapes("train")
    assert np.array_equal(xtr, xtr2)


def test_builtin_labels_are_alphabetical_animals():
    assert ANIMAL_SHAPE_CLASSES == sorted(ANIMAL_SHAPE_CLASSES)
    x, y = load_animal_shapes("test")
    # the mapping was checked by eye; here, two shape facts it implies: giraffes are the thinnest silhouettes
    # (least foreground) and elephants the bulkiest
    fill = [(x[y == c] > 127).mean() for c in range(10)]
    assert ANIMAL_SHAPE_CLASSES[int(np.argmin(fill))] == "giraffe"
    assert ANIMAL_SHAPE_CLASSES[int(np.argmax(fill))] == "elephant"


def test_numpy_only_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    path = tmp_path / "evil.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(Evil(), f)
    with gzip.open(path, "rb") as f, pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        _NumpyOnlyUnpickler(f).load()
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    with gzip.open(path, "wb") as f:
        pickle.dump(arr, f)
    with gzip.open(path, "rb") as f:
        assert np.array_equal(_NumpyOnlyUnpickler(f).load(), arr)


def test_fit_builtin_pads_exactly_at_32_and_resizes_otherwise():
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(fit_builtin(x, 28), x)
    padded = fit_builtin(x, 32)
    assert padded.shape == (3, 1, 32, 32)
    assert torch.equal(padded[:, :, 2:30, 2:30], x) and padded[:, :, :2].sum() == 0 and padded[:, :, :, 30:].sum() == 0
    flat = torch.full((1, 1, 28, 28), 200, dtype=torch.uint8)
    assert torch.equal(fit_builtin(flat, 64), torch.full((1, 1, 64, 64), 200, dtype=torch.uint8))


def test_builtin_dataset_channels_and_range():
    d = load_dataset("builtin:animal-shapes", 32, channels=3, split="test")
    assert d.images.shape == (1000, 3, 32, 32) and d.images.dtype == torch.uint8
    assert torch.equal(d.images[:, 0], d.images[:, 2])
    assert d.class_names == ANIMAL_SHAPE_CLASSES


def test_range_conversions_invert():
    u = torch.arange(256, dtype=torch.uint8)
    x = to_model_range(u)
    assert x.min() == -1 and x.max() == 1
    assert torch.equal(to_uint8(x), u)


def test_image_folder(tmp_path):
    for name, color in [("cat", 30), ("dog", 220)]:
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("RGB", (40 + i * 7, 30), (color, color, color)).save(tmp_path / name / f"{i}.jpg")
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="broken.jpg"):
        d = load_dataset(str(tmp_path), 16, channels=3)
    assert d.class_names == ["cat", "dog"]
    assert d.images.shape == (6, 3, 16, 16)
    assert d.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert abs(d.images[0].float().mean() - 30) < 3 and abs(d.images[5].float().mean() - 220) < 3


@pytest.mark.parametrize("source", ["/nonexistent/folder", "builtin:cifar"])
def test_bad_sources_are_user_errors(source):
    with pytest.raises(UserError):
        load_dataset(source, 32)


def test_empty_folder_is_user_error(tmp_path):
    with pytest.raises(UserError, match="no class subfolders"):
        load_dataset(str(tmp_path), 32)
    (tmp_path / "cat").mkdir()
    with pytest.raises(UserError, match="no readable image"):
        load_dataset(str(tmp_path), 32)


def test_batch_stream_visits_each_item_once_per_epoch_and_restores():
    s = BatchStream(10, 4, seed=3)
    batches = [s.next() for _ in range(5)]  # 20 items = 2 epochs
    seen = torch.cat(batches)
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    assert not torch.equal(seen[:10], seen[10:])  # a new permutation each epoch
    s2 = BatchStream(10, 4, seed=3)
    for _ in range(2):
        s2.next()
    resumed = BatchStream(10, 4, seed=3, **s2.state())
    assert all(torch.equal(resumed.next(), b) for b in batches[2:])


def test_random_hflip_mirrors_about_half():
    x = torch.arange(4.0).view(1, 1, 1, 4).repeat(1000, 1, 1, 1)
    y = random_hflip(x, torch.Generator().manual_seed(0))
    flipped = (y[:, 0, 0, 0] == 3).float().mean()
    assert 0.45 < flipped < 0.55
    assert torch.all((y == x).all(dim=(1, 2, 3)) | (y == x.flip(-1)).all(dim=(1, 2, 3)))
