"""Folder datasets: Animals-10 names, captions, bad files, the memory-mapped cache and its invalidation."""

import os
import warnings

import numpy as np
import pytest
import torch
from data_trees import BAD_KINDS, animals_tree, captioned_tree

from ddpm.common.errors import UserError
from ddpm.data.cache import MappedImages, decode_file, entry_dir
from ddpm.data.dataset import DataWarning, load_dataset
from ddpm.data.transforms import DecodeSpec


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_CACHE_DIR", str(tmp_path / "cache"))


def load(root, size=16, channels=3, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = load_dataset(str(root), size, channels, **kw)
    return d, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def test_animals10_names_translated_with_aliases_and_stable_order(tmp_path):
    d, msgs = load(animals_tree(tmp_path / "raw-img"))
    assert msgs == []
    assert d.class_names == ["butterfly", "cat", "dog"]  # sorted by English name
    assert d.aliases == {"butterfly": ["farfalla"], "cat": ["gatto"], "dog": ["cane"]}
    assert d.labels.tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    assert isinstance(d.images, MappedImages) and d.images.shape == (8, 3, 16, 16)
    batch = d.images[torch.tensor([7, 0])]
    assert isinstance(batch, torch.Tensor) and batch.dtype == torch.uint8 and batch.shape == (2, 3, 16, 16)


def test_other_folder_names_are_used_as_is(tmp_path):
    root = animals_tree(tmp_path / "d")
    (root / "cane").rename(root / "Zebra crossing")
    d, _ = load(root, channels=1)
    assert d.class_names == ["Zebra crossing", "butterfly", "cat"] and "Zebra crossing" not in d.aliases
    assert d.images.shape == (8, 1, 16, 16)


def test_every_bad_file_is_skipped_with_one_warning_and_a_summary(tmp_path):
    root = animals_tree(tmp_path / "d", bad=True)
    d, msgs = load(root)
    assert len(d) == 8 and len(d.skipped) == len(BAD_KINDS)
    reasons = {os.path.basename(p): r for p, r in d.skipped}
    for name, kind in BAD_KINDS.items():
        assert reasons[name].startswith(kind), (name, reasons[name])
        assert sum(name in m for m in msgs) == 1, name
    assert msgs[-1].startswith(f"skipped {len(BAD_KINDS)} of {8 + len(BAD_KINDS)} files") and "2 corrupt or truncated" in msgs[-1]
    _, again = load(root)  # a cache hit reports the same files
    assert again == msgs


@pytest.mark.parametrize("make,needle", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: p, "no class subfolders"),
    (lambda p: (p / "cane").mkdir() or p, "'dog' under"),
])
def test_folder_errors_are_user_errors(tmp_path, make, needle):
    with pytest.raises(UserError, match=needle):
        load(make(tmp_path))


def test_a_class_with_only_bad_files_is_a_user_error(tmp_path):
    root = animals_tree(tmp_path / "d")
    (root / "ragno").mkdir()
    (root / "ragno" / "x.jpg").write_text("not an image")
    with pytest.raises(UserError, match="class 'spider' .* has no readable image"):
        load(root)


def test_cached_tensors_equal_direct_decoding(tmp_path):
    root = animals_tree(tmp_path / "d")
    spec = DecodeSpec(16, 3)
    d, _ = load(root)
    files = sorted(p for p in root.rglob("*") if p.suffix in (".jpg", ".png"))
    by_class = {}
    for p in files:
        by_class.setdefault(p.relative_to(root).parts[0], []).append(p)
    ordered = [p for c in ("farfalla", "gatto", "cane") for p in by_class[c]]
    direct = np.stack([decode_file(p, spec, 16)[0] for p in ordered]).transpose(0, 3, 1, 2)
    assert torch.equal(d.images[:], torch.from_numpy(direct))


def test_cache_hit_and_invalidation_on_file_change(tmp_path):
    root = animals_tree(tmp_path / "d")
    cache = tmp_path / "mycache"
    d1, _ = load(root, cache_dir=cache)
    folder = entry_dir(cache, root, DecodeSpec(16, 3))
    (first,) = [p for p in folder.iterdir() if p.suffix == ".npy"]
    before = first.stat().st_mtime_ns
    d2, _ = load(root, cache_dir=cache)
    assert first.stat().st_mtime_ns == before and torch.equal(d1.images[:], d2.images[:])  # hit: not rewritten
    from data_trees import noise_image
    noise_image(9, (40, 40)).save(root / "cane" / "a.jpg")  # a file replaced
    d3, _ = load(root, cache_dir=cache)
    files = [p for p in folder.iterdir() if p.suffix == ".npy"]
    assert files != [first] and len(files) == 1  # rebuilt, the stale entry removed
    assert not torch.equal(d3.images[5], d1.images[5]) and torch.equal(d3.images[:5], d1.images[:5])
    (root / "cane" / "b.png").unlink()  # a file removed
    d4, _ = load(root, cache_dir=cache)
    assert len(d4) == 7


def test_random_crop_stores_a_larger_square(tmp_path):
    from ddpm.config import DataConfig

    root = animals_tree(tmp_path / "d")
    d, _ = load(root, options=DataConfig(source=str(root), crop="random"))
    assert d.images.shape == (8, 3, 18, 18) and d.crop == "random" and d.size == 16
    x = d.batch(torch.arange(8), torch.Generator().manual_seed(0), hflip=True)
    assert x.shape == (8, 3, 16, 16) and x.min() >= -1 and x.max() <= 1


def test_captions_with_and_without_class_folders(tmp_path):
    d, _ = load(captioned_tree(tmp_path / "c", with_classes=True))
    assert d.class_names == ["fox", "owl"]
    assert d.captions == [["a fox number 0"], ["fox 1", "another fox"], ["a owl number 0"], ["owl 1", "another owl"]]
    flat, _ = load(captioned_tree(tmp_path / "flat", with_classes=False))
    assert flat.class_names == ["flat"] and len(flat) == 3 and flat.captions == [[f"picture {i}"] for i in range(3)]
    plain, _ = load(animals_tree(tmp_path / "p"))
    assert plain.captions is None


def test_malformed_metadata_is_a_user_error(tmp_path):
    root = captioned_tree(tmp_path / "c", with_classes=True)
    (root / "metadata.jsonl").write_text('{"file_name": "owl/0.png", "text": "ok"}\nnot json\n')
    with pytest.raises(UserError, match="line 2"):
        load(root)


def test_parallel_decoding_equals_in_process(tmp_path, monkeypatch):
    import ddpm.data.cache as datacache
    from ddpm.data.folder import scan_folder

    index = scan_folder(animals_tree(tmp_path / "d", bad=True))
    serial = datacache.open_cache(index, DecodeSpec(16, 3), 16, tmp_path / "a", workers=1)
    monkeypatch.setattr(datacache, "PARALLEL_FROM", 0)
    parallel = datacache.open_cache(index, DecodeSpec(16, 3), 16, tmp_path / "b", workers=2)
    assert parallel.built and parallel.kept == serial.kept and parallel.skipped == serial.skipped
    assert torch.equal(parallel.images[:], serial.images[:])
