"""Prompt faithfulness on `builtin:shapes-text`: does an image drawn for a scene's caption show what it says?

The prompts (`eval_scenes`): the first scenes of the fixed test splits, `seen` (only colour-shape pairs of the train
split) and `held_out` (only pairs never drawn in training), each prompted with its first caption. Attributes:

    colour    per object: the palette colour that most of the bright pixels (a channel >= 128) in the object's
              region vote for, each pixel voting for the nearest palette colour after division by its brightest
              channel (its chroma: an anti-aliased edge or a darker shade keeps its vote). Regions: a scene's
              only object is judged on the whole image (wherever it was drawn: a misplaced object is the
              position's error, not the colour's); of two objects, each on the image half its position names
              (left, right, top, bottom): which colour went where is what binding means. Pixels and not a
              classifier: nothing learned stands between the word and the measurement, and a background never
              reaches 128, so no background pixel votes.
    shape     per object: the shape the probe (scene_probe.py) sees at the object's position; a scene's only
              object, drawn alone at another place, is read there
    object    per object: colour and shape both right (what a held-out pair tests)
    count     per scene: the number of places the probe sees occupied is the number of objects
    position  per scene: the occupied places are exactly the scene's positions
    scene     per scene: every object's colour and shape, and the positions, right
    pairs     (`pair_outcomes`) of the scenes with two objects of different colours: both colours right, swapped,
              one colour twice, other; counts over seen and held-out together; `shape_outcomes` the same for the
              scenes with two objects of different shapes, read by the probe at the two places
Beside them, shape accuracy in the scenes of one object and of two (where a text model's shape misses are).
Chance (`chance`): the accuracy of the best answer that ignores the image, for these scenes: the most frequent
colour, shape, pair, count, layout and whole scene. For the default 100 + 100 scenes (seen / held-out): colour 24% /
21%, shape 34% / 34%, object 10% / 21%, count 66% / 64%, position 20% / 21%, scene 3% / 5%. Uniform noise and a
constant image score at or below these (tests/test_faithfulness.py); the renders themselves score 100%.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ddpm.data.shapes_text import COLOURS, POSITIONS, SHAPES, SIZE, Scene, caption, split_scenes
from ddpm.evaluation.scene_probe import EMPTY, SceneProbe, load_probe, read_places

ATTRIBUTES = ("colour", "shape", "object", "count", "position", "scene")
BRIGHT = 128  # a pixel votes when its brightest channel reaches this (backgrounds stay <= 70, palette >= 230)
_PALETTE = np.array(list(COLOURS.values()), np.float32)
_CHROMA = _PALETTE / _PALETTE.max(1, keepdims=True)  # (K, 3)


@dataclass(frozen=True)
class EvalScenes:
    seen: tuple[Scene, ...]
    held_out: tuple[Scene, ...]

    @property
    def scenes(self) -> tuple[Scene, ...]:
        """Seen then held-out: the order of `prompts` and of the images `faithfulness` expects."""
        return self.seen + self.held_out

    @property
    def prompts(self) -> list[str]:
        """Caption 0 of every scene (colour, shape and position of each object)."""
        return [caption(s, 0) for s in self.scenes]


def eval_scenes(seen: int = 100, held_out: int = 100) -> EvalScenes:
    """The evaluation prompt set: the first `seen` scenes of the test-seen split and the first `held_out` of the
    test-held-out split (fixed: the same scenes in every call)."""
    return EvalScenes(split_scenes("test-seen")[:seen], split_scenes("test-held-out")[:held_out])


def region(position: str | None) -> tuple[slice, slice]:
    """(rows, columns) of the pixels whose colour speaks for an object at `position` (None: the whole image)."""
    half, full = SIZE // 2, slice(0, SIZE)
    return {"left": (full, slice(0, half)), "right": (full, slice(half, SIZE)), "top": (slice(0, half), full),
            "bottom": (slice(half, SIZE), full),
            "centre": (slice(SIZE // 4, 3 * SIZE // 4), slice(SIZE // 4, 3 * SIZE // 4)), None: (full, full)}[position]


def region_colour(image: np.ndarray, position: str | None) -> str | None:
    """The palette colour voted by the bright pixels of `image` (3, 32, 32) uint8 in `position`'s region (None: the
    whole image); None when no pixel there is bright."""
    rows, cols = region(position)
    px = image[:, rows, cols].reshape(3, -1).T.astype(np.float32)  # (P, 3)
    px = px[px.max(1) >= BRIGHT]
    if not len(px):
        return None
    chroma = px / px.max(1, keepdims=True)
    votes = ((chroma[:, None, :] - _CHROMA[None]) ** 2).sum(-1).argmin(1)  # (P,) nearest palette colour
    return list(COLOURS)[int(np.bincount(votes, minlength=len(COLOURS)).argmax())]


def _layout(scene: Scene) -> frozenset[str]:
    return frozenset(o.position for o in scene.objects)


def score_scenes(images: np.ndarray, scenes: tuple[Scene, ...], places: torch.Tensor) -> dict[str, float]:
    """Accuracy of each attribute (see the module doc) of images (N, 3, 32, 32) uint8 drawn for `scenes`, given
    what the probe read at each place, `places` (N, PLACES)."""
    hits: dict[str, list[bool]] = {a: [] for a in ATTRIBUTES}
    for image, scene, seen in zip(images, scenes, places.tolist()):
        occupied = frozenset(p for p, c in zip(POSITIONS, seen) if c != EMPTY)
        all_right = occupied == _layout(scene)
        alone = len(scene.objects) == 1  # its colour and shape are judged wherever it was drawn
        for o in scene.objects:
            colour = region_colour(image, None if alone else o.position) == o.colour
            read = seen[POSITIONS.index(o.position)]
            if alone and read == EMPTY and len(occupied) == 1:
                read = seen[POSITIONS.index(next(iter(occupied)))]
            shape = read == 1 + SHAPES.index(o.shape)
            hits["colour"].append(colour)
            hits["shape"].append(shape)
            hits["object"].append(colour and shape)
            all_right = all_right and colour and shape
        hits["count"].append(len(occupied) == len(scene.objects))
        hits["position"].append(occupied == _layout(scene))
        hits["scene"].append(all_right)
    return {a: float(np.mean(h)) if h else float("nan") for a, h in hits.items()}


PAIR_OUTCOMES = ("right", "swapped", "one colour twice", "other")
SHAPE_OUTCOMES = ("right", "swapped", "one shape twice", "other")


def two_colours(scene: Scene) -> bool:
    """A scene of two objects of different colours: one whose colours can be swapped."""
    return len(scene.objects) == 2 and scene.objects[0].colour != scene.objects[1].colour


def two_shapes(scene: Scene) -> bool:
    """A scene of two objects of different shapes: one whose shapes can be swapped."""
    return len(scene.objects) == 2 and scene.objects[0].shape != scene.objects[1].shape


def _outcome(seen: tuple, named: tuple, names: tuple[str, ...]) -> str:
    """What was drawn at the two objects' places against what the caption named there: names[0] right, [1] swapped,
    [2] one of the two named values in both places, [3] anything else."""
    if seen == named:
        return names[0]
    if seen == named[::-1]:
        return names[1]
    return names[2] if seen[0] == seen[1] and seen[0] in named else names[3]


def pair_outcomes(images: np.ndarray, scenes: tuple[Scene, ...]) -> dict[str, int]:
    """Of the scenes with two objects of different colours, how many of images (N, 3, 32, 32) uint8 show both colours
    where they belong ("right"), each where the other belongs ("swapped": the binding error), one of the two
    colours in both places ("one colour twice"), or anything else: how a text model binds colour words."""
    counts = dict.fromkeys(PAIR_OUTCOMES, 0)
    for image, scene in zip(images, scenes):
        if two_colours(scene):
            a, b = scene.objects
            seen = (region_colour(image, a.position), region_colour(image, b.position))
            counts[_outcome(seen, (a.colour, b.colour), PAIR_OUTCOMES)] += 1
    return counts


def shape_outcomes(places: torch.Tensor, scenes: tuple[Scene, ...]) -> dict[str, int]:
    """`pair_outcomes` for shapes: of the scenes with two objects of different shapes, the probe's reading at the two
    places (`places` (N, PLACES), read_places) against the shapes the caption put there."""
    counts = dict.fromkeys(SHAPE_OUTCOMES, 0)
    for seen_places, scene in zip(places.tolist(), scenes):
        if two_shapes(scene):
            seen = tuple(seen_places[POSITIONS.index(o.position)] for o in scene.objects)
            counts[_outcome(seen, tuple(1 + SHAPES.index(o.shape) for o in scene.objects), SHAPE_OUTCOMES)] += 1
    return counts


def chance(scenes: tuple[Scene, ...]) -> dict[str, float]:
    """Per attribute, the accuracy of the most frequent answer in `scenes`, the best guess that ignores the image."""
    objects = [o for s in scenes for o in s.objects]

    def top(values: list) -> float:
        return Counter(values).most_common(1)[0][1] / len(values) if values else float("nan")

    return {"colour": top([o.colour for o in objects]), "shape": top([o.shape for o in objects]),
            "object": top([o.pair for o in objects]), "count": top([len(s.objects) for s in scenes]),
            "position": top([_layout(s) for s in scenes]),
            "scene": top([tuple((o.pair, o.position) for o in s.objects) for s in scenes])}


@dataclass
class FaithfulnessReport:
    """Accuracy per attribute for the seen and the held-out scenes, beside the chance level of each."""

    seen: dict[str, float]
    held_out: dict[str, float]
    chance: dict[str, dict[str, float]] = field(default_factory=dict)  # "seen" | "held_out" -> attribute -> level
    counts: dict[str, int] = field(default_factory=dict)  # scenes in each group
    pairs: dict[str, int] = field(default_factory=dict)  # pair_outcomes over all the scenes
    shape_pairs: dict[str, int] = field(default_factory=dict)  # shape_outcomes over all the scenes
    shape_by_objects: dict[str, dict[int, float]] = field(default_factory=dict)  # group -> objects in scene -> shape

    def to_dict(self) -> dict:
        return {"seen": self.seen, "held_out": self.held_out, "chance": self.chance, "scenes": self.counts,
                "pairs": self.pairs, "shape_pairs": self.shape_pairs, "shape_by_objects": self.shape_by_objects}

    def lines(self) -> list[str]:
        """A table for a terminal: one row per attribute, seen / held-out / their chance levels; then shape in
        scenes of one and of two objects, the two-colour pairs and the two-shape pairs."""
        out = [f"{'':<9} {'seen':>6} {'held-out':>9}   chance (seen / held-out)"]
        for a in ATTRIBUTES:
            out.append(f"{a:<9} {self.seen[a]:>6.1%} {self.held_out[a]:>9.1%}   "
                       f"{self.chance['seen'][a]:.1%} / {self.chance['held_out'][a]:.1%}")
        if self.shape_by_objects:
            out.append("shape by objects in the scene: " + "; ".join(
                f"{g.replace('_', '-')} " + ", ".join(f"{n}: {v:.1%}" for n, v in by.items())
                for g, by in self.shape_by_objects.items()))
        for what, counts in (("colours", self.pairs), ("shapes", self.shape_pairs)):
            if counts:
                out.append(f"two objects of two {what} ({sum(counts.values())}): "
                           + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return out


def faithfulness(images: torch.Tensor | np.ndarray, scenes: tuple[Scene, ...] | list[Scene],
                 probe: SceneProbe | None = None, cache_dir: Path | None = None) -> FaithfulnessReport:
    """How faithfully images (N, 3, 32, 32) uint8 show `scenes` (image i drawn for scene i), per attribute, on the
    seen and the held-out scenes separately (a scene is held-out when one of its pairs is). `probe`: the shape
    reader, by default the cached one (`load_probe`, trained on first use)."""
    x = np.asarray(torch.as_tensor(images).cpu())
    if x.dtype != np.uint8 or x.shape[1:] != (3, SIZE, SIZE) or len(x) != len(scenes):
        raise ValueError(f"expected {len(scenes)} uint8 images of 3x{SIZE}x{SIZE}, got {x.dtype} {tuple(x.shape)}")
    places = read_places(probe or load_probe(cache_dir), x)
    scenes = tuple(scenes)
    groups = {"seen": [i for i, s in enumerate(scenes) if not s.held_out],
              "held_out": [i for i, s in enumerate(scenes) if s.held_out]}
    scores = {g: score_scenes(x[idx], tuple(scenes[i] for i in idx), places[idx]) for g, idx in groups.items()}
    levels = {g: chance(tuple(scenes[i] for i in idx)) for g, idx in groups.items()}
    by_objects = {g: {n: score_scenes(x[sub], tuple(scenes[i] for i in sub), places[sub])["shape"]
                      for n in (1, 2) if (sub := [i for i in idx if len(scenes[i].objects) == n])}
                  for g, idx in groups.items()}
    return FaithfulnessReport(scores["seen"], scores["held_out"], levels, {g: len(i) for g, i in groups.items()},
                              pair_outcomes(x, scenes), shape_outcomes(places, scenes), by_objects)


# Colour words of free prompts (the Twemoji set): hue ranges in degrees, [start, end), red wrapping through 0.
# Edges between the reference colours: Twemoji's orange and yellow hearts sit at 34 and 42 degrees, its blue and
# purple at 206 and 263, so the orange/yellow edge is 38 and the blue/purple edge 252 (pure blue is 240).
HUE_WORDS: dict[str, tuple[float, float]] = {
    "red": (345.0, 15.0), "orange": (15.0, 38.0), "yellow": (38.0, 70.0), "green": (70.0, 165.0),
    "blue": (165.0, 252.0), "purple": (252.0, 345.0)}
MIN_CHROMA = 40  # max - min channel (of 255): below it a pixel is white, grey or black and has no hue
MIN_COLOURED = 0.02  # share of an image's pixels that must be coloured for it to have a colour at all


def hue_word(image: np.ndarray | torch.Tensor) -> str | None:
    """The colour word of an RGB image (3, H, W) uint8: each coloured pixel (max - min channel >= MIN_CHROMA, so
    a white or transparent background, grey and black outlines do not count) votes for the HUE_WORDS range of its
    hue with its chroma; None when under MIN_COLOURED of the pixels are coloured."""
    px = np.asarray(image, np.float32).reshape(3, -1)  # (3, P)
    hi, lo = px.max(0), px.min(0)
    chroma = hi - lo
    keep = chroma >= MIN_CHROMA
    if keep.mean() < MIN_COLOURED:
        return None
    r, g, b = px[:, keep]
    c, top = chroma[keep], hi[keep]
    hue = np.where(top == r, ((g - b) / c) % 6, np.where(top == g, (b - r) / c + 2, (r - g) / c + 4)) * 60.0
    votes = {w: float(c[(hue >= a) & (hue < z) if a < z else (hue >= a) | (hue < z)].sum())
             for w, (a, z) in HUE_WORDS.items()}
    return max(votes, key=votes.__getitem__)


def _hue_words_in(prompt: str) -> list[str]:
    return [w for w in prompt.lower().replace(",", " ").split() if w in HUE_WORDS]


def prompt_colour(prompt: str) -> str | None:
    """The first colour word of HUE_WORDS in a prompt ('a purple heart' -> 'purple'), or None."""
    return next(iter(_hue_words_in(prompt)), None)


COLOUR_PROMPTS = 100  # captions `ddpm eval` draws for the colour-word check of a text model on captioned folders


def colour_prompts(captions: list[str], limit: int = COLOUR_PROMPTS) -> list[str]:
    """The captions that name exactly one colour of HUE_WORDS ('red and blue' cannot be checked by one hue),
    sorted, thinned evenly to at most `limit`: the colour-word check of a text model trained on its own captions."""
    named = sorted({c for c in captions if len(set(_hue_words_in(c))) == 1})
    if len(named) <= limit:
        return named
    return [named[i * len(named) // limit] for i in range(limit)]


def colour_words(images: np.ndarray | torch.Tensor, prompts: list[str]) -> dict[str, float]:
    """The colour-word check of images drawn one per prompt (`colour_prompts`): accuracy (colour_word_accuracy),
    the number of prompts, and chance: the share of the most frequent colour word, the best image-blind answer."""
    named = [w for w in map(prompt_colour, prompts) if w is not None]
    top = Counter(named).most_common(1)
    return {"accuracy": colour_word_accuracy(images, prompts), "prompts": float(len(named)),
            "chance": top[0][1] / len(named) if top else float("nan")}


def colour_word_accuracy(images: np.ndarray | torch.Tensor, prompts: list[str]) -> float:
    """Share of the images (N, 3, H, W) uint8, drawn for prompts that name a colour, whose hue_word is that colour
    (prompts without a colour word are left out; nan when none has one)."""
    pairs = [(i, prompt_colour(p)) for i, p in enumerate(prompts)]
    hits = [hue_word(np.asarray(images[i])) == w for i, w in pairs if w is not None]
    return float(np.mean(hits)) if hits else float("nan")
