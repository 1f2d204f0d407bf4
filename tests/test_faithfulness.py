"""The faithfulness metrics measure what they claim: real renders score ~100%, noise and blank images no better than
chance, and changing one attribute of the drawn scene moves that attribute's score alone."""

import dataclasses
import os

import numpy as np
import pytest
import torch

from ddpm.data import shapes_text as st
from ddpm.data.shapes_text import ObjectSpec, Scene
from ddpm.evaluation import scene_probe
from ddpm.evaluation.faithfulness import (ATTRIBUTES, HUE_WORDS, chance, colour_prompts, colour_word_accuracy,
                                          colour_words, eval_scenes, faithfulness, hue_word, pair_outcomes,
                                          prompt_colour, region_colour, shape_outcomes)
from ddpm.evaluation.scene_probe import read_places

SWAP_SHAPE = {"circle": "square", "square": "triangle", "triangle": "cross", "cross": "circle"}
SWAP_COLOUR = {"red": "blue", "blue": "green", "green": "purple", "purple": "yellow", "yellow": "white", "white": "red"}
MIRROR = {"left": "right", "right": "left"}


@pytest.fixture(scope="module")
def probe():
    """Trained once for this module (~20-50 s on this CPU), not the packaged one: the training is what is tested."""
    return scene_probe.train_probe()


@pytest.fixture(scope="module")
def scenes():
    return eval_scenes(150, 150).scenes


def _redraw(scenes, **change):
    """The scenes with every object's attribute changed by the given maps (colour=..., shape=..., position=...)."""
    out = []
    for s in scenes:
        objs = tuple(dataclasses.replace(o, **{k: m.get(getattr(o, k), getattr(o, k)) for k, m in change.items()})
                     for o in s.objects)
        out.append(Scene(objs, s.background, s.texture))
    return out


def test_eval_scenes_are_fixed_and_split():
    ev = eval_scenes()
    assert len(ev.seen) == len(ev.held_out) == 100 and ev == eval_scenes()
    assert not any(s.held_out for s in ev.seen) and all(s.held_out for s in ev.held_out)
    assert ev.prompts[0] == st.caption(ev.seen[0]) and len(ev.prompts) == 200
    assert {o.pair for s in ev.held_out for o in s.objects} == set(st.HELD_OUT)


def test_real_renders_score_near_100(probe, scenes):
    report = faithfulness(st.render(list(scenes)), scenes, probe)
    assert report.counts == {"seen": 150, "held_out": 150}
    for group in (report.seen, report.held_out):
        assert all(group[a] >= 0.98 for a in ATTRIBUTES), group
    assert len(report.lines()) == 4 + len(ATTRIBUTES)
    assert set(report.to_dict()) == {"seen", "held_out", "chance", "scenes", "pairs", "shape_pairs", "shape_by_objects"}
    two = sum(len(s.objects) == 2 and s.objects[0].colour != s.objects[1].colour for s in scenes)
    assert two > 50 and report.pairs == {"right": two, "swapped": 0, "one colour twice": 0, "other": 0}
    shapes = sum(len(s.objects) == 2 and s.objects[0].shape != s.objects[1].shape for s in scenes)
    assert shapes > 50 and report.shape_pairs["right"] >= shapes - 1 and report.shape_pairs["swapped"] == 0
    assert all(v >= 0.98 for by in report.shape_by_objects.values() for v in by.values())
    assert {g: set(by) for g, by in report.shape_by_objects.items()} == {"seen": {1, 2}, "held_out": {1, 2}}


@pytest.mark.parametrize("kind", ["noise", "black", "grey", "white"])
def test_noise_and_constant_images_score_no_better_than_chance(probe, scenes, kind):
    shape = (len(scenes), 3, 32, 32)
    images = {"noise": np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8),
              "black": np.zeros(shape, np.uint8), "grey": np.full(shape, 128, np.uint8),
              "white": np.full(shape, 255, np.uint8)}[kind]
    report = faithfulness(images, scenes, probe)
    for name in ("seen", "held_out"):
        got, level = getattr(report, name), report.chance[name]
        assert all(got[a] <= level[a] + 0.08 for a in ATTRIBUTES), (name, got, level)


def test_one_wrong_attribute_moves_its_score_only(probe, scenes):
    real = faithfulness(st.render(_redraw(scenes, colour=SWAP_COLOUR)), scenes, probe)
    assert real.seen["colour"] == real.held_out["colour"] == 0.0 and real.seen["object"] == 0.0
    assert real.seen["shape"] >= 0.98 and real.seen["position"] >= 0.98
    wrong_shape = faithfulness(st.render(_redraw(scenes, shape=SWAP_SHAPE)), scenes, probe)
    assert wrong_shape.seen["shape"] <= 0.02 and wrong_shape.held_out["shape"] <= 0.02
    assert wrong_shape.seen["colour"] >= 0.98 and wrong_shape.seen["count"] >= 0.98
    single = [s for s in scenes if len(s.objects) == 1]
    mirrored = faithfulness(st.render(_redraw(single, position=MIRROR)), single, probe)
    sideways = np.mean([s.objects[0].position in MIRROR for s in single if not s.held_out])
    assert 0.2 < sideways < 0.6
    assert mirrored.seen["position"] == pytest.approx(1 - sideways, abs=0.02)  # left/right scenes all wrong now
    # a lone object drawn at the wrong place is the position's error only: its colour and shape are judged where it is
    assert mirrored.seen["count"] >= 0.98 and mirrored.seen["shape"] >= 0.98 and mirrored.seen["colour"] >= 0.98


def test_pair_outcomes_tell_swapped_and_doubled_colours_from_right_ones(scenes):
    """Renders of the scenes with the two objects' colours exchanged are all "swapped"; with the second object in
    the first one's colour, all "one colour twice"; with both in a colour neither names, all "other"."""
    two = tuple(s for s in scenes if len(s.objects) == 2 and s.objects[0].colour != s.objects[1].colour)

    def recolour(pick):
        return [Scene(tuple(dataclasses.replace(o, colour=c) for o, c in zip(s.objects, pick(s))), s.background,
                      s.texture) for s in two]

    def outside(s):
        return [next(c for c in st.COLOURS if c not in (s.objects[0].colour, s.objects[1].colour))] * 2

    n = len(two)
    assert pair_outcomes(st.render(list(two)), two) == {"right": n, "swapped": 0, "one colour twice": 0, "other": 0}
    swapped = recolour(lambda s: (s.objects[1].colour, s.objects[0].colour))
    assert pair_outcomes(st.render(swapped), two)["swapped"] == n
    doubled = recolour(lambda s: (s.objects[0].colour, s.objects[0].colour))
    assert pair_outcomes(st.render(doubled), two)["one colour twice"] == n
    assert pair_outcomes(st.render(recolour(outside)), two)["other"] == n
    lone = tuple(s for s in scenes if len(s.objects) == 1)
    assert sum(pair_outcomes(st.render(list(lone)), lone).values()) == 0  # one object: not a pair


def test_shape_outcomes_tell_swapped_and_doubled_shapes_from_right_ones(probe, scenes):
    """The probe's reading of renders with the two objects' shapes exchanged counts as "swapped", with the first
    object's shape in both places as "one shape twice"; a shape error in the two-object scenes only shows in the
    two-object column of the shape by objects."""
    two = tuple(s for s in scenes if len(s.objects) == 2 and s.objects[0].shape != s.objects[1].shape)

    def reshape(pick):
        return [Scene(tuple(dataclasses.replace(o, shape=z) for o, z in zip(s.objects, pick(s))), s.background,
                      s.texture) for s in two]

    def places(drawn):
        return read_places(probe, st.render(drawn))

    n = len(two)
    assert shape_outcomes(places(list(two)), two)["right"] >= n - 1
    exchanged = reshape(lambda s: (s.objects[1].shape, s.objects[0].shape))
    assert shape_outcomes(places(exchanged), two)["swapped"] >= n - 1
    doubled = shape_outcomes(places(reshape(lambda s: (s.objects[0].shape,) * 2)), two)
    assert doubled["one shape twice"] >= n - 1 and doubled["right"] == 0
    lone = tuple(s for s in scenes if len(s.objects) == 1)
    assert sum(shape_outcomes(places(list(lone)), lone).values()) == 0
    report = faithfulness(st.render(list(lone) + exchanged), tuple(lone) + two, probe)
    for by in report.shape_by_objects.values():
        assert by[1] >= 0.98 and by[2] <= 0.02


def test_chance_is_the_most_frequent_answer():
    red = Scene((ObjectSpec("red", "circle", "small", "left"),))
    blue = Scene((ObjectSpec("blue", "circle", "small", "top"), ObjectSpec("blue", "cross", "small", "bottom")))
    levels = chance((red, red, blue))
    assert levels == {"colour": 0.5, "shape": 0.75, "object": 0.5, "count": 2 / 3, "position": 2 / 3,
                      "scene": 2 / 3}


def test_region_colour_votes_by_chroma():
    for name, rgb in st.COLOURS.items():
        image = np.zeros((3, 32, 32), np.uint8)
        image[:, 4:12, 2:10] = np.array(rgb)[:, None, None]
        image[:, 12:14, 2:10] = (0.6 * np.array(rgb) + 0.4 * 60).astype(np.uint8)[:, None, None]  # a blended edge
        assert region_colour(image, "left") == name
        assert region_colour(image, "right") is None  # nothing bright there
    dark_red = np.zeros((3, 32, 32), np.uint8)
    dark_red[0] = 140  # a dim but pure red still reads red
    assert region_colour(dark_red, "centre") == "red"


def test_packaged_probe_is_of_these_versions_and_reads_the_renders(probe, tmp_path, monkeypatch):
    # The shipped file must be renamed (retrained: python -m ddpm.evaluation.scene_probe) when either version moves;
    # until then load_probe would train one on every first use.
    path = scene_probe.packaged_probe_path()
    assert path.is_file(), f"{path.name} is missing: run python -m ddpm.evaluation.scene_probe"
    tensors, meta = scene_probe.read_safetensors(path)
    assert (meta["generator_version"], meta["probe_version"]) == (str(st.GENERATOR_VERSION), str(scene_probe.PROBE_VERSION))
    packaged = scene_probe.build_with_weights(scene_probe.SceneProbe, tensors).eval()
    monkeypatch.setattr(scene_probe, "train_probe", lambda **_: pytest.fail("trained with a packaged probe there"))
    loaded = scene_probe.load_probe(tmp_path)  # an empty cache: the packaged file is what load_probe gives
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), packaged.state_dict().values()))
    scenes = list(eval_scenes(150, 150).scenes)
    images, truth = st.render(scenes), scene_probe.place_targets(scenes)
    read = scene_probe.read_places(packaged, images)
    assert (read == truth).all(1).float().mean() >= 0.99  # every place of a scene right
    assert (read == scene_probe.read_places(probe, images)).float().mean() >= 0.99  # as a freshly trained probe


def test_probe_is_cached_by_generator_version(tmp_path, probe, monkeypatch):
    monkeypatch.setattr(scene_probe, "PACKAGED", tmp_path / "none")  # no packaged probe: the cache is read
    path = scene_probe.probe_path(tmp_path)
    assert f"g{st.GENERATOR_VERSION}-p{scene_probe.PROBE_VERSION}" in path.name
    path.parent.mkdir(parents=True)
    scene_probe.write_safetensors(path, probe.state_dict())
    loaded = scene_probe.load_probe(tmp_path)  # read, not retrained
    images = st.render(list(eval_scenes(20, 0).scenes))
    assert scene_probe.read_places(loaded, images).equal(scene_probe.read_places(probe, images))


def test_bad_images_are_refused(probe, scenes):
    with pytest.raises(ValueError, match="uint8 images of 3x32x32"):
        faithfulness(np.zeros((len(scenes), 3, 28, 28), np.uint8), scenes, probe)
    with pytest.raises(ValueError):
        faithfulness(np.zeros((3, 3, 32, 32), np.uint8), scenes, probe)


def _solid(rgb, size=32, background=(255, 255, 255), share=0.5):
    """A square of colour `rgb` covering `share` of a `background` image, (3, size, size) uint8."""
    image = np.empty((3, size, size), np.uint8)
    image[:] = np.array(background, np.uint8)[:, None, None]
    side = int(size * share ** 0.5)
    image[:, :side, :side] = np.array(rgb, np.uint8)[:, None, None]
    return image


def test_hue_word_of_solid_colours_independent_of_hsv_code():
    import colorsys

    for word, (start, end) in HUE_WORDS.items():
        span = (end - start) % 360
        for frac in (0.1, 0.5, 0.9):  # inside the range, away from its edges
            hue = (start + frac * span) % 360
            for s, v in ((1.0, 1.0), (0.5, 0.8), (0.9, 0.4)):
                rgb = [round(255 * c) for c in colorsys.hsv_to_rgb(hue / 360, s, v)]
                assert hue_word(_solid(rgb)) == word, (word, hue, s, v)
                assert hue_word(_solid(rgb, background=(0, 0, 0), share=0.1)) == word
    for grey in ((255, 255, 255), (128, 128, 128), (0, 0, 0), (200, 190, 185)):
        assert hue_word(_solid(grey)) is None  # no hue: white, grey, black, a faint tint
    assert hue_word(_solid((220, 40, 40), share=0.01)) is None  # too few coloured pixels to call


def test_colour_words_of_prompts():
    assert prompt_colour("a Purple heart") == "purple" and prompt_colour("green, large circle") == "green"
    assert prompt_colour("a heart") is None
    images = np.stack([_solid((220, 40, 40)), _solid((40, 60, 230)), _solid((40, 200, 60))])
    assert colour_word_accuracy(images, ["a red heart", "a green circle", "a smiling face"]) == 0.5
    assert np.isnan(colour_word_accuracy(images[:1], ["a face"]))


def test_colour_prompts_keep_captions_naming_one_colour():
    captions = ["a red heart", "red and blue flag", "a face", "large blue circle", "blue, light blue heart",
                "a red heart", "green apple", "brown heart"]
    assert colour_prompts(captions) == ["a red heart", "blue, light blue heart", "green apple", "large blue circle"]
    many = [f"a red thing {i:03d}" for i in range(250)]
    picked = colour_prompts(many, limit=100)
    assert len(picked) == 100 and picked == sorted(picked) and len(set(picked)) == 100
    assert picked[0] == many[0] and picked[-1] > many[240]  # spread over the whole list, not its first 100


def test_colour_words_report_accuracy_and_chance():
    red, blue, green = _solid((220, 40, 40)), _solid((40, 60, 230)), _solid((40, 200, 60))
    prompts = ["a red heart", "red circle", "red square", "a blue heart"]
    got = colour_words(np.stack([red, blue, red, green]), prompts)
    assert got == {"accuracy": 0.5, "prompts": 4.0, "chance": 0.75}  # 2 of 4 right; "red" is 3 of the 4 words


TWEMOJI = os.environ.get("DDPM_TWEMOJI_TGZ", "")


@pytest.mark.skipif(not os.path.isfile(TWEMOJI), reason="set DDPM_TWEMOJI_TGZ to an `npm pack "
                    "emoji-datasource-twitter` tarball to check the hue metric on real Twemoji")
@pytest.mark.parametrize("size", [32, 64])
def test_hue_word_of_twemoji_hearts_circles_squares(size):
    import json
    import tarfile

    from PIL import Image

    with tarfile.open(TWEMOJI) as tar:
        image_of = {e["short_name"]: e["image"] for e in json.load(tar.extractfile("package/emoji.json"))}
        for word in HUE_WORDS:
            names = (["heart", "red_circle"] if word == "red" else [f"{word}_heart", f"large_{word}_circle"])
            for name in names + [f"large_{word}_square"]:
                im = Image.open(tar.extractfile("package/img/twitter/64/" + image_of[name])).convert("RGBA")
                flat = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im).convert("RGB")
                rgb = np.asarray(flat.resize((size, size), Image.Resampling.BICUBIC)).transpose(2, 0, 1)
                assert hue_word(rgb) == word, name


def test_probe_blur_is_a_unit_gaussian_of_the_given_std():
    import torch

    impulse = torch.zeros(1, 1, 15, 15, dtype=torch.float64)
    impulse[0, 0, 7, 7] = 1
    for sigma in (0.8, 1.0):  # the std the augmentation uses (up to 1 px; 7 taps hold +-3 std)
        out = scene_probe.gaussian_blur(impulse, sigma)[0, 0]
        offsets = torch.arange(-7, 8, dtype=torch.float64)
        assert float(out.sum()) == pytest.approx(1.0)
        assert float((out.sum(0) * offsets**2).sum()) == pytest.approx(sigma**2, rel=0.02)  # variance along x
        assert torch.allclose(out, out.T)
    assert scene_probe.gaussian_blur(impulse, 0.0).equal(impulse)
