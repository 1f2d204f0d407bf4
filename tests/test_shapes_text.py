"""builtin:shapes-text: captions say exactly what was drawn, held-out pairs never reach the train split, the splits
are fixed by their seeds, and the set loads like the other built-in data."""

import re
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from ddpm.common.errors import UserError
from ddpm.data import shapes_text as st
from ddpm.data.dataset import load_dataset
from ddpm.data.inspect import format_report, inspect_folder
from ddpm.data.probe import probe_shape
from ddpm.data.shapes_text import HELD_OUT, ObjectSpec, Scene

COLOUR_WORDS = ("red", "yellow", "green", "blue", "purple", "white")
SHAPE_WORDS = ("circle", "square", "triangle", "cross")
SAMPLE = st.split_scenes("train")[:300] + st.split_scenes("test-held-out")[:100]


def _mentions(text: str) -> list[tuple[str, str]]:
    """(colour, shape) pairs as written: 'green triangle' or 'triangle that is green'."""
    pairs = [(c, s) for c, s in re.findall(rf"\b({'|'.join(COLOUR_WORDS)}) ({'|'.join(SHAPE_WORDS)})\b", text)]
    pairs += [(c, s) for s, c in re.findall(rf"\b({'|'.join(SHAPE_WORDS)}) that is ({'|'.join(COLOUR_WORDS)})\b", text)]
    return pairs


def _check_caption(text: str, scene: Scene) -> None:
    """An independent reading of one caption against the scene's parameters."""
    objs = scene.objects
    words = re.findall(r"[a-z]+", text)
    assert {w for w in words if w in COLOUR_WORDS} <= {o.colour for o in objs}, text
    assert {w for w in words if w in SHAPE_WORDS} <= {o.shape for o in objs}, text
    said = _mentions(text)
    assert said and set(said) <= {o.pair for o in objs}, text
    for size, o in zip(re.findall(r"\b(small|large) \w+ (\w+)", text), objs):
        assert size[0] == o.size, text
    bg = re.search(r"on an? ([a-z ]+) background", text)
    if bg:
        assert bg.group(1) == st.BACKGROUND_WORDS[scene.background], text
    if len(objs) == 1:
        for word, place in (("left", "left"), ("right", "right"), ("top", "top"), ("bottom", "bottom"),
                            ("centre", "centre")):
            if word in words:
                assert objs[0].position == place, text
        return
    assert len(said) == 2, text
    first, second = said
    by_pair = {o.pair: o.position for o in objs}
    if len(by_pair) == 2:  # two different pairs: the relation word must order them as drawn
        wanted = {"above": ("top", "bottom"), "below": ("bottom", "top"), "to the left of": ("left", "right"),
                  "to the right of": ("right", "left")}
        rel = re.search(r"(above|below|to the left of|to the right of)", text)
        places = re.findall(r"(at the top|at the bottom|on the left|on the right)", text)
        got = (by_pair[first], by_pair[second])
        if rel:
            assert got == wanted[rel.group(1)], text
        else:
            assert [p.split()[-1] for p in places] == list(got), text


def test_every_caption_names_exactly_what_the_parameters_drew():
    for scene in SAMPLE:
        texts = st.captions(scene)
        assert len(set(texts)) == len(texts) >= 5
        for text in texts:
            _check_caption(text, scene)
        assert st.caption(scene, 0) == texts[0] and st.caption(scene, len(texts)) == texts[0]


def test_captions_known_scenes():
    one = Scene((ObjectSpec("green", "triangle", "small", "left"),))
    two = Scene((ObjectSpec("red", "circle", "large", "top"), ObjectSpec("blue", "square", "small", "bottom")))
    assert st.captions(one)[:3] == ["a small green triangle on the left", "green triangle, left",
                                    "a triangle that is green"]
    assert st.caption(two) == "a red circle above a blue square"
    assert st.caption(two, 1) == "a blue square below a red circle"
    with pytest.raises(ValueError):
        Scene((ObjectSpec("red", "circle", "large", "top"), ObjectSpec("red", "circle", "large", "left")))
    with pytest.raises(ValueError):
        ObjectSpec("orange", "circle", "large", "top")
    with pytest.raises(ValueError):
        ObjectSpec("red", "circle", "large", "top", dx=2)  # large objects move at most 1 px


def _pil_mask(scene: Scene) -> np.ndarray:
    """An independent rasterisation (PIL, 8x supersampled) of the scene's shapes: (32, 32) coverage > 1/2."""
    k = 8
    im = Image.new("L", (32 * k, 32 * k), 0)
    d = ImageDraw.Draw(im)
    for o in scene.objects:
        cx, cy = (v * k for v in o.centre)
        h = st.SIZES[o.size] / 2 * k
        if o.shape == "circle":
            d.ellipse((cx - h, cy - h, cx + h, cy + h), fill=255)
        elif o.shape == "square":
            q = round(0.85 * h / k) * k
            d.rectangle((cx - q, cy - q, cx + q - 1, cy + q - 1), fill=255)
        elif o.shape == "triangle":
            d.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=255)
        else:
            t = round(0.4 * h / k) * k
            d.rectangle((cx - h, cy - t, cx + h - 1, cy + t - 1), fill=255)
            d.rectangle((cx - t, cy - h, cx + t - 1, cy + h - 1), fill=255)
    return np.asarray(im, np.float32).reshape(32, k, 32, k).mean((1, 3)) > 127


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / max(1, (a | b).sum())


def test_renders_show_the_parameters_shape_position_and_colour():
    scenes = list(SAMPLE[:200])
    images = st.render(scenes)
    assert images.shape == (200, 3, 32, 32) and images.dtype == np.uint8
    for image, scene in zip(images, scenes):
        drawn = image.max(0) >= 128  # objects are bright, backgrounds at most 70
        truth = _pil_mask(scene)
        assert _iou(drawn, truth) > 0.8
        for j, o in enumerate(scene.objects):
            x, y = (int(v) for v in o.centre)
            assert tuple(image[:, y, x]) == st.COLOURS[o.colour]  # the centre pixel is fully covered
            for other in st.SHAPES:  # the shape drawn fits better than any other shape at that place
                if other != o.shape:
                    objs = list(scene.objects)
                    objs[j] = ObjectSpec(o.colour, other, o.size, o.position, o.dx, o.dy)
                    assert _iou(drawn, truth) > _iou(drawn, _pil_mask(Scene(tuple(objs))))


def test_held_out_pairs_never_in_train_and_cover_every_colour_and_shape():
    assert {c for c, _ in HELD_OUT} == set(st.COLOURS) and {s for _, s in HELD_OUT} == set(st.SHAPES)
    train_pairs = {o.pair for s in st.split_scenes("train") for o in s.objects}
    assert not train_pairs & set(HELD_OUT)
    assert train_pairs == set(st.SEEN)  # every seen pair is trained
    held = st.split_scenes("test-held-out")
    assert all(o.pair in HELD_OUT for s in held for o in s.objects) and all(s.held_out for s in held)
    assert {o.pair for s in held for o in s.objects} == set(HELD_OUT)
    assert not any(s.held_out for s in st.split_scenes("test-seen"))
    assert st.split_scenes("test") == st.split_scenes("test-seen") + st.split_scenes("test-held-out")


def test_train_split_has_more_two_object_scenes_and_the_share_only_moves_the_threshold():
    def two(scenes) -> float:
        return float(np.mean([len(s.objects) == 2 for s in scenes]))

    train = st.split_scenes("train")
    assert abs(two(train) - st.TRAIN_TWO_OBJECTS_P) < 0.015  # 24,000 draws: sd 0.003
    for split in ("test-seen", "test-held-out", "probe"):
        assert abs(two(st.split_scenes(split)) - st.TWO_OBJECTS_P) < 0.05
    # The same draws at both shares: a scene with two objects at the lower share is the same scene at the higher
    # one, and a scene with one object at the higher share is the same at the lower one; only the rest change.
    low = st.sample_scenes(st.TRAIN_SCENES, st.SEEN, seed=0, two_objects=st.TWO_OBJECTS_P)
    assert all(h == lo for lo, h in zip(low, train) if len(lo.objects) == 2 or len(h.objects) == 1)
    moved = sum(len(lo.objects) == 1 and len(h.objects) == 2 for lo, h in zip(low, train))
    assert abs(moved / st.TRAIN_SCENES - (st.TRAIN_TWO_OBJECTS_P - st.TWO_OBJECTS_P)) < 0.015


def test_scenes_and_renders_are_deterministic_by_seed():
    a = st.sample_scenes(500, st.SEEN, seed=0)
    assert a == st.sample_scenes(500, st.SEEN, seed=0)
    assert a != st.sample_scenes(500, st.SEEN, seed=1)
    assert np.array_equal(st.render(a), st.render(list(a)))
    train = list(st.split_scenes("train"))
    assert np.array_equal(st.render(train[:64]), st.split_images("train")[:64])
    kinds = {s.background for s in a}
    assert kinds == set(st.BACKGROUNDS) and {len(s.objects) for s in a} == {1, 2}


def test_training_split_generates_in_seconds():
    start = time.perf_counter()
    scenes = st.sample_scenes(st.TRAIN_SCENES, st.SEEN, seed=0, two_objects=st.TRAIN_TWO_OBJECTS_P)
    assert scenes == list(st.split_scenes("train"))
    images = np.concatenate([st.render(scenes[i:i + 4096]) for i in range(0, len(scenes), 4096)])
    took = time.perf_counter() - start
    assert images.shape == (st.TRAIN_SCENES, 3, 32, 32)
    assert took < 30, f"{took:.1f} s"  # ~4 s on one idle core; the bound leaves room for a shared machine


def test_load_dataset_gives_captioned_colour_images_never_mirrored():
    data = load_dataset(st.SHAPES_TEXT, 32, 3, "train")
    scenes = st.split_scenes("train")
    assert data.images.shape == (st.TRAIN_SCENES, 3, 32, 32) and data.class_names == list(st.SHAPES)
    assert data.captions is not None and data.captions[7] == st.captions(scenes[7])
    assert data.labels[:50].tolist() == [st.SHAPES.index(s.objects[0].shape) for s in scenes[:50]]
    g = torch.Generator().manual_seed(0)
    idx = torch.arange(16)
    assert torch.equal(data.batch(idx, g, hflip=True), data.batch(idx, g, hflip=False))  # "left" stays left
    test = load_dataset(st.SHAPES_TEXT, 32, 3, "test")
    assert len(test) == 2 * st.TEST_SCENES
    grey = load_dataset(st.SHAPES_TEXT, 32, 1, "test-seen")
    rgb = data.images[:1].permute(0, 2, 3, 1)[0].numpy()
    assert grey.images.shape == (st.TEST_SCENES, 1, 32, 32)
    pil = np.asarray(Image.fromarray(load_dataset(st.SHAPES_TEXT, 32, 3, "test-seen").images[3].permute(1, 2, 0)
                                     .numpy()).convert("L"))
    assert np.array_equal(grey.images[3, 0].numpy(), pil) and rgb.shape == (32, 32, 3)
    assert load_dataset(st.SHAPES_TEXT, 64, 3, "test-seen").images.shape[-1] == 64
    with pytest.raises(UserError, match="split"):
        load_dataset(st.SHAPES_TEXT, 32, 3, "validation")


def test_probe_and_inspect_know_the_set(tmp_path):
    shape = probe_shape(st.SHAPES_TEXT)
    assert (shape.channels, shape.image_size) == (3, 32)
    report = inspect_folder(st.SHAPES_TEXT, sheet=tmp_path / "sheet.png")
    assert report["images"] == st.TRAIN_SCENES and report["captioned"] == st.TRAIN_SCENES
    assert sum(c["count"] for c in report["classes"]) == st.TRAIN_SCENES
    assert report["splits"] == {"train": st.TRAIN_SCENES, "test-seen": st.TEST_SCENES, "test-held-out": st.TEST_SCENES}
    assert (tmp_path / "sheet.png").is_file() and "never in train: red square" in format_report(report)
