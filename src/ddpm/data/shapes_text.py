"""The generated captioned set `builtin:shapes-text`: one or two coloured shapes on a dark background, 32 px RGB,
with captions written from the parameters that drew them, so every word of a caption can be checked in the pixels.

A scene (`Scene`) is one or two `ObjectSpec`s and a background:
    colour    red, yellow, green, blue, purple, white  (hues 0, 52, 128, 226, 280 degrees and no hue: far apart)
    shape     circle, square, triangle, cross          (a filled disc, box, upward triangle, plus sign)
    size      small (10 px across), large (14 px); the box edges of squares and crosses fall on pixel edges
    position  left, right, top, bottom, centre         (one object); two objects are `X above Y` (top, bottom) or
              `X to the left of Y` (left, right)
    jitter    dx, dy in [-2, 2] px (small) or [-1, 1] px (large): two large objects never overlap
    background black (70%), plain grey, grey noise, grey stripes; every background pixel is at most 70 of 255 and
              every palette colour has a channel of at least 230, so "an object's pixels" is well defined
The renderer draws each shape from its signed distance d (px, negative inside) with coverage clip(0.5 - d, 0, 1):
anti-aliased, vectorised over scenes (24,000 scenes in a few seconds on one core).

Held-out combinations: the (colour, shape) pairs of HELD_OUT (every colour once, every shape at least once) are
never drawn in the train split. Splits, each from its own seed, fixed: `train` (TRAIN_SCENES, seen pairs only),
`test-seen` and `test-held-out` (TEST_SCENES each: only seen pairs / only held-out pairs), whose concatenation is
the dataset's `test` split. Two objects in TWO_OBJECTS_P of the test and probe scenes and in TRAIN_TWO_OBJECTS_P of
the training ones: two objects are where the words must bind each shape to its place, and a model trained on 70% of
them binds more of the seen shapes at the same budget (docs/text.md, "One noise per image, and more scenes of two
objects"). The share only moves a threshold on the same random draws: the test and probe splits are the scenes
they were when training had 40% too.
Labels: the first object's shape (class_names = SHAPES).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SHAPES_TEXT = "builtin:shapes-text"
GENERATOR_VERSION = 1  # bump when the test or probe scenes, renders or captions change: probes cached for another
# version are retrained (it seeds every split, so a bump redraws them all)
SIZE = 32  # px, native

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30), "yellow": (240, 215, 30), "green": (40, 200, 60),
    "blue": (40, 90, 255), "purple": (170, 50, 230), "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES: dict[str, float] = {"small": 10.0, "large": 14.0}  # extent across, px (even: crisp box edges)
JITTER: dict[str, int] = {"small": 2, "large": 1}  # px, each way
CENTRES: dict[str, tuple[float, float]] = {  # (x, y) in px, the image spans [0, 32]
    "left": (8.0, 16.0), "right": (24.0, 16.0), "top": (16.0, 8.0), "bottom": (16.0, 24.0), "centre": (16.0, 16.0)}
POSITIONS = tuple(CENTRES)
RELATIONS: dict[str, tuple[str, str]] = {"above": ("top", "bottom"), "to the left of": ("left", "right")}
INVERSE = {"above": "below", "to the left of": "to the right of"}
BACKGROUNDS = ("black", "grey", "noise", "stripes")
BACKGROUND_P = (0.7, 0.1, 0.1, 0.1)
BACKGROUND_WORDS = {"black": "black", "grey": "grey", "noise": "noisy grey", "stripes": "striped grey"}
MAX_BACKGROUND = 70  # brightest background value (uint8)
TWO_OBJECTS_P = 0.4  # share of scenes with two objects: the test and probe splits
TRAIN_TWO_OBJECTS_P = 0.7  # the same in the train split

HELD_OUT: tuple[tuple[str, str], ...] = (
    ("red", "square"), ("yellow", "circle"), ("green", "triangle"),
    ("blue", "cross"), ("purple", "circle"), ("white", "square"))
ALL_PAIRS = tuple((c, s) for c in COLOURS for s in SHAPES)
SEEN = tuple(p for p in ALL_PAIRS if p not in HELD_OUT)

TRAIN_SCENES, TEST_SCENES = 24_000, 1_000
SPLITS: dict[str, tuple[int, tuple[tuple[str, str], ...], int, float]] = {  # name -> (seed, pairs drawn, scenes,
    # share of two-object scenes)
    "train": (0, SEEN, TRAIN_SCENES, TRAIN_TWO_OBJECTS_P), "test-seen": (1, SEEN, TEST_SCENES, TWO_OBJECTS_P),
    "test-held-out": (2, HELD_OUT, TEST_SCENES, TWO_OBJECTS_P), "probe": (3, ALL_PAIRS, 20_000, TWO_OBJECTS_P)}

POSITION_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
                    "centre": "in the centre"}


@dataclass(frozen=True)
class ObjectSpec:
    colour: str
    shape: str
    size: str
    position: str
    dx: int = 0  # px, added to the position's centre
    dy: int = 0

    def __post_init__(self) -> None:
        for name, allowed in (("colour", COLOURS), ("shape", SHAPES), ("size", SIZES), ("position", CENTRES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if max(abs(self.dx), abs(self.dy)) > JITTER[self.size]:
            raise ValueError(f"a {self.size} object moves at most {JITTER[self.size]} px, got ({self.dx}, {self.dy})")

    @property
    def pair(self) -> tuple[str, str]:
        return self.colour, self.shape

    @property
    def centre(self) -> tuple[float, float]:
        x, y = CENTRES[self.position]
        return x + self.dx, y + self.dy


@dataclass(frozen=True)
class Scene:
    objects: tuple[ObjectSpec, ...]
    background: str = "black"
    texture: int = 0  # seed of the noise or the stripes' period and phase

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {', '.join(BACKGROUNDS)}, got {self.background!r}")
        if len(self.objects) == 2 and self.relation is None or len(self.objects) not in (1, 2):
            raise ValueError("a scene is one object, or two at (top, bottom) or (left, right)")

    @property
    def relation(self) -> str | None:
        """'above' or 'to the left of' for two objects (the first relative to the second); None for one."""
        places = tuple(o.position for o in self.objects)
        return next((r for r, p in RELATIONS.items() if p == places), None)

    @property
    def held_out(self) -> bool:
        return any(o.pair in HELD_OUT for o in self.objects)


def _a(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def captions(scene: Scene) -> list[str]:
    """Every caption of `scene`, derived from its parameters only, in a fixed order; the first names colour, shape
    and position of every object ("a small green triangle on the left", "a red circle above a blue square")."""
    bg = f"on {_a(BACKGROUND_WORDS[scene.background])} background"
    if len(scene.objects) == 1:
        o = scene.objects[0]
        c, s, where = o.colour, o.shape, POSITION_PHRASES[o.position]
        return [f"{_a(f'{o.size} {c} {s}')} {where}", f"{c} {s}, {o.position}", f"{_a(s)} that is {c}",
                f"{_a(f'{c} {s}')} {where} {bg}", _a(f"{c} {s}")]
    a, b = scene.objects
    rel = scene.relation
    assert rel is not None
    return [f"{_a(f'{a.colour} {a.shape}')} {rel} {_a(f'{b.colour} {b.shape}')}",
            f"{_a(f'{b.colour} {b.shape}')} {INVERSE[rel]} {_a(f'{a.colour} {a.shape}')}",
            f"{_a(f'{a.size} {a.colour} {a.shape}')} {rel} {_a(f'{b.size} {b.colour} {b.shape}')}",
            f"two shapes: {_a(f'{a.colour} {a.shape}')} {POSITION_PHRASES[a.position]} and "
            f"{_a(f'{b.colour} {b.shape}')} {POSITION_PHRASES[b.position]}",
            f"{a.colour} {a.shape} {rel} {b.colour} {b.shape}, {bg}"]


def caption(scene: Scene, k: int = 0) -> str:
    """Caption k of `scene` (k taken modulo the number of phrasings); k = 0 is the evaluation prompt."""
    options = captions(scene)
    return options[k % len(options)]


def sample_scenes(n: int, pairs: tuple[tuple[str, str], ...], seed: int, two_objects: float = TWO_OBJECTS_P
                  ) -> list[Scene]:
    """n scenes whose objects' (colour, shape) are drawn uniformly from `pairs`, two objects in a share
    `two_objects` of them, deterministic in (n, pairs, seed, two_objects). Every share takes the same random draws:
    scene i has two objects when its uniform u_i < two_objects, and its other parameters do not depend on the share."""
    rng = np.random.default_rng([GENERATOR_VERSION, seed])
    two = rng.random(n) < two_objects
    rel = rng.integers(len(RELATIONS), size=n)
    pick = rng.integers(len(pairs), size=(n, 2))
    size = rng.integers(len(SIZES), size=(n, 2))
    place = rng.integers(len(POSITIONS), size=n)
    jitter = rng.integers(-2, 3, size=(n, 2, 2))
    bg = rng.choice(len(BACKGROUNDS), size=n, p=BACKGROUND_P)
    texture = rng.integers(2**31, size=n)
    sizes, relations = list(SIZES), list(RELATIONS)
    scenes = []
    for i in range(n):
        places = RELATIONS[relations[rel[i]]] if two[i] else (POSITIONS[place[i]],)
        objects = []
        for j, where in enumerate(places):
            z = sizes[size[i, j]]
            dx, dy = np.clip(jitter[i, j], -JITTER[z], JITTER[z]).tolist()
            objects.append(ObjectSpec(*pairs[pick[i, j]], z, where, dx, dy))
        scenes.append(Scene(tuple(objects), BACKGROUNDS[bg[i]], int(texture[i])))
    return scenes


_YX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5  # (2, 32, 32) pixel centres: y, x


def _distance(shape: str, x: np.ndarray, y: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Signed distance (px, < 0 inside) of pixel offsets (x, y) from the centre, (k, 32, 32), to a shape of half
    extent h (k, 1, 1). Boxes and the triangle are max over edge half-planes (exact along edges, where the
    coverage is decided)."""
    if shape == "circle":
        return np.sqrt(x * x + y * y) - h
    if shape == "square":
        return np.maximum(np.abs(x), np.abs(y)) - np.round(0.85 * h)  # side 8 or 12 px: about the disc's area
    if shape == "cross":
        t = np.round(0.4 * h)  # half the arm's width: 2 or 3 px
        return np.minimum(np.maximum(np.abs(x) - h, np.abs(y) - t), np.maximum(np.abs(x) - t, np.abs(y) - h))
    # triangle: apex (0, -h), base y = +h from x = -h to +h; the slanted edges' unit normals (+-2, -1) / sqrt(5)
    slant = (2 * np.abs(x) - y - h) / np.sqrt(5.0)
    return np.maximum(slant, y - h)


def _backgrounds(scenes: list[Scene]) -> np.ndarray:
    """(N, 32, 32) float32 grey levels of each scene's background."""
    out = np.zeros((len(scenes), SIZE, SIZE), np.float32)
    for i, s in enumerate(scenes):
        if s.background == "black":
            continue
        rng = np.random.default_rng(s.texture)
        if s.background == "grey":
            out[i] = rng.integers(30, MAX_BACKGROUND + 1)
        elif s.background == "noise":
            out[i] = rng.integers(15, MAX_BACKGROUND + 1, size=(SIZE, SIZE))
        else:  # diagonal stripes of period 4-8 px, values 20 and 60
            period, phase = rng.integers(4, 9), rng.integers(0, 8)
            out[i] = np.where(((_YX[0] + _YX[1] + phase) // (period / 2)) % 2 == 0, 20, 60)
    return out


def render(scenes: list[Scene]) -> np.ndarray:
    """Scenes -> (N, 3, 32, 32) uint8 RGB, deterministic; objects painted in order over the background."""
    canvas = np.repeat(_backgrounds(scenes)[:, None], 3, axis=1)  # (N, 3, 32, 32) float32
    for slot in range(2):
        for shape in SHAPES:
            rows = [i for i, s in enumerate(scenes) if len(s.objects) > slot and s.objects[slot].shape == shape]
            if not rows:
                continue
            objs = [scenes[i].objects[slot] for i in rows]
            cx, cy = (np.array([o.centre[k] for o in objs], np.float32)[:, None, None] for k in (0, 1))
            h = np.array([SIZES[o.size] / 2 for o in objs], np.float32)[:, None, None]
            cover = np.clip(0.5 - _distance(shape, _YX[1] - cx, _YX[0] - cy, h), 0, 1)[:, None]  # (k, 1, 32, 32)
            rgb = np.array([COLOURS[o.colour] for o in objs], np.float32)[:, :, None, None]  # (k, 3, 1, 1)
            canvas[rows] = canvas[rows] * (1 - cover) + rgb * cover
    return np.round(canvas).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def split_scenes(split: str) -> tuple[Scene, ...]:
    """The fixed scenes of a split: train, test-seen, test-held-out, test (the last two), or probe (all pairs)."""
    if split == "test":
        return split_scenes("test-seen") + split_scenes("test-held-out")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose train, test, {', '.join(SPLITS)}")
    seed, pairs, n, two_objects = SPLITS[split]
    return tuple(sample_scenes(n, pairs, seed, two_objects))


@functools.lru_cache(maxsize=2)
def split_images(split: str) -> np.ndarray:
    """(N, 3, 32, 32) uint8 renders of `split_scenes(split)`, kept in RAM after the first call."""
    scenes = list(split_scenes(split))
    return np.concatenate([render(scenes[i:i + 4096]) for i in range(0, len(scenes), 4096)])


def labels(scenes: tuple[Scene, ...] | list[Scene]) -> np.ndarray:
    """(N,) int64: the index in SHAPES of each scene's first object."""
    return np.array([SHAPES.index(s.objects[0].shape) for s in scenes], dtype=np.int64)
