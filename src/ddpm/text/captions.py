"""Captions made from class names: varied English templates, aware of articles and plurals.

A class folder or the built-in dataset has no captions; a text-conditioned model trained on it sees, for each
image, one of `class_captions(name)` ("a dog", "a photo of a dog", "dogs", "a picture of an elephant", ...), so
that at sampling time "a photo of a dog" and "dogs" both land where the training captions were.
"""

from __future__ import annotations

VOWEL_SOUND_EXCEPTIONS = {"uni", "use", "eur", "one", "ewe"}  # written with a vowel, said with a consonant
IRREGULAR_PLURALS = {
    "sheep": "sheep", "deer": "deer", "fish": "fish", "moose": "moose", "bison": "bison", "mouse": "mice",
    "goose": "geese", "ox": "oxen", "child": "children", "person": "people", "man": "men", "woman": "women",
    "cattle": "cattle", "wolf": "wolves", "calf": "calves", "leaf": "leaves", "knife": "knives",
}

# {n}: the noun; {a}: the noun with its article ("an elephant"); {p}: its plural
TEMPLATES = ("{a}", "{n}", "a photo of {a}", "a picture of {a}", "an image of {a}", "a drawing of {a}",
             "a silhouette of {a}", "{p}", "a photo of {p}", "some {p}")


def article(noun: str) -> str:
    """'a dog', 'an elephant', 'a unicorn' (a silent h, 'an hour', is not handled: rare for class names)."""
    word = noun.strip()
    lower = word.lower()
    vowel = lower[:1] in "aeiou" and not any(lower.startswith(e) for e in VOWEL_SOUND_EXCEPTIONS)
    return f"{'an' if vowel else 'a'} {word}"


def plural(noun: str) -> str:
    """English plural of the last word: sheep -> sheep, butterfly -> butterflies, fox -> foxes, dog -> dogs."""
    head, _, last = noun.strip().rpartition(" ")
    lower = last.lower()
    if lower in IRREGULAR_PLURALS:
        out = IRREGULAR_PLURALS[lower]
    elif lower.endswith(("s", "x", "z", "ch", "sh")):
        out = last + "es"
    elif lower.endswith("y") and lower[-2:-1] not in tuple("aeiou"):
        out = last[:-1] + "ies"
    else:
        out = last + "s"
    return f"{head} {out}" if head else out


def class_captions(name: str) -> list[str]:
    """Every template filled with `name` (underscores as spaces), without duplicates, in a fixed order."""
    noun = name.replace("_", " ").strip()
    return list(dict.fromkeys(t.format(n=noun, a=article(noun), p=plural(noun)) for t in TEMPLATES))
