"""Free-text prompts: checked, read from files, and matched to what a model knows.

A class-conditioned model knows its classes. A prompt that is a class name, an alias or an index is taken as it
is (similarity 1); any other prompt is embedded (all-MiniLM-L6-v2) and compared by cosine similarity with the
"anchors" of every class: the captions.py templates over the class name and over each alias ("a dog", "dogs",
"a photo of a dog", ..., "a cane"); the class of the most similar anchor wins.
A text-conditioned model knows its training captions (RUN/captions.json): prompts are compared with those.

FAR_THRESHOLD: below this best similarity a prompt is "far from everything the model knows": it is reported
with its nearest classes or captions (an error with strict=True). 0.5 was chosen from measurements (docs/text.md):
over 40 English paraphrases of the 10 built-in classes and 20 Animals-10 prompts (Italian names included) the
correctly matched ones scored 0.47-0.94 (one of 40 below 0.5), while 20 unrelated prompts ("a red sports car",
"quantum chromodynamics", "a bicycle", ...) scored at most 0.45 against the built-in classes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ddpm.common.errors import UserError
from ddpm.common.ostext import as_text
from ddpm.common.parse import ascii_integer
from ddpm.text.captions import article, class_captions
from ddpm.text.condition import TextLayout, text_condition

FAR_THRESHOLD = 0.5
MAX_PROMPT_CHARS = 10_000  # longer prompts are refused: the encoder reads at most 256 tokens (~1,000 characters)


class FarPrompt(UserWarning):
    """A prompt matched nothing the model knows closely (similarity below FAR_THRESHOLD)."""


@dataclass
class Match:
    """What a prompt resolved to."""

    prompt: str
    index: int  # class id; for text matching, the nearest caption's index
    name: str  # class name or nearest caption
    similarity: float  # cosine similarity to the best anchor (1.0 for exact names)
    anchor: str  # the anchor text that matched best
    nearest: list[tuple[str, float]] = field(default_factory=list)  # (name, similarity), best first, distinct names

    @property
    def far(self) -> bool:
        return self.similarity < FAR_THRESHOLD

    def describe(self) -> str:
        near = ", ".join(f"{n!r} {s:.2f}" for n, s in self.nearest)
        shown = self.prompt if len(self.prompt) <= 60 else self.prompt[:57] + "..."
        return f"{shown!r} is far from everything this model knows (nearest: {near}; threshold {FAR_THRESHOLD})"


def clean_prompt(text: str, where: str = "prompt") -> str:
    """The prompt with surrounding whitespace removed, as text (common/ostext: a command-line argument that is not
    UTF-8 reads as the escaped form class names are stored in); empty, whitespace-only or huge prompts are
    UserErrors."""
    if not isinstance(text, str):
        raise UserError(f"{where} must be text, got {type(text).__name__}")
    cleaned = as_text(" ".join(text.split()))  # newlines, tabs and runs of spaces become one space
    if not cleaned:
        raise UserError(f"{where} is empty; write what to draw, e.g. \"a zebra\"")
    if len(cleaned) > MAX_PROMPT_CHARS:
        raise UserError(f"{where} has {len(cleaned):,} characters; the text encoder reads only about the first 1,000 "
                        f"(256 tokens), so shorten it below {MAX_PROMPT_CHARS:,}")
    return cleaned


def read_prompts_file(path: str | Path) -> list[str]:
    """One prompt a line (blank lines skipped). Non-UTF-8 bytes are a UserError naming the line."""
    p = Path(path).expanduser()
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read the prompts file {path}: {e.strerror}") from None
    prompts = []
    for n, line in enumerate(raw.splitlines(), 1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{path} line {n} is not UTF-8 (byte 0x{line[e.start]:02x} at column {e.start + 1}); "
                            "save the file as UTF-8") from None
        if text.strip():
            prompts.append(clean_prompt(text, f"{path} line {n}"))
    if not prompts:
        raise UserError(f"{path} holds no prompt; write one prompt a line")
    return prompts


def is_index(text: str) -> bool:
    """Whether `text` reads as a class index (common/parse.ascii_integer: "²" and a 5,000-digit string are prompts,
    not indices)."""
    return ascii_integer(text) is not None


def exact_class(prompt: str | int, class_names: Sequence[str], aliases: dict[str, list[str]]) -> int | None:
    """The class whose name, alias or index the prompt is (case-insensitive; a name read from the OS compared in its
    common/ostext form, the form class names are stored in), else None."""
    key = as_text(str(prompt).strip()).lower()
    if is_index(key):
        i = int(key)
        return i if 0 <= i < len(class_names) else None
    lowered = [c.lower() for c in class_names]
    if key in lowered:
        return lowered.index(key)
    for name, others in aliases.items():
        if key in (o.lower() for o in others) and name.lower() in lowered:
            return lowered.index(name.lower())
    return None


def resolve_class(spec: str | int, class_names: Sequence[str], aliases: dict[str, list[str]] | None = None) -> int:
    """A class name or alias (case-insensitive) or index -> class id; anything else is a one-line UserError."""
    found = exact_class(spec, class_names, aliases or {})
    if found is not None:
        return found
    known = ", ".join(as_text(n) for n in class_names[:20]) + (f", ... ({len(class_names):,} in all)"
                                                               if len(class_names) > 20 else "")
    if is_index(str(spec)):
        raise UserError(f"class index {int(spec)} is out of range 0..{len(class_names) - 1}; known classes: {known}")
    shown = str(spec) if len(str(spec)) <= 60 else str(spec)[:57] + "..."
    raise UserError(f"unknown class {shown!r}; known classes: {known}")


_ANCHOR_CACHE: dict[tuple[str, ...], torch.Tensor] = {}


class Matcher:
    """Nearest-anchor matching of prompts: anchors (A, 384) with owner ids (A,) naming `names` entries."""

    def __init__(self, anchors: list[str], owners: list[int], names: list[str], disk_cache: bool = False) -> None:
        from ddpm.text.bank import embed_texts
        from ddpm.text.encoder import load_encoder

        self.anchors, self.names = anchors, names
        self.owners = torch.tensor(owners)
        key = tuple(anchors)
        if key not in _ANCHOR_CACHE:  # the same model's anchors are embedded once per process
            _ANCHOR_CACHE.clear()
            _ANCHOR_CACHE[key] = embed_texts(anchors)[0] if disk_cache else load_encoder().encode(anchors)
        self.embeddings = _ANCHOR_CACHE[key]  # (A, 384)

    @classmethod
    def for_classes(cls, class_names: Sequence[str], aliases: dict[str, list[str]]) -> "Matcher":
        anchors, owners = [], []
        for i, name in enumerate(class_names):
            for n in [name, *aliases.get(name, [])]:
                for text in class_captions(n):
                    anchors.append(text)
                    owners.append(i)
        return cls(anchors, owners, list(class_names))

    @classmethod
    def for_captions(cls, captions: Sequence[str]) -> "Matcher":
        """A text run's training captions (thousands: 7,297 for shapes-text, ~20 s through the encoder on 2 cores)
        come from the disk cache of text embeddings, where training left them."""
        return cls(list(captions), list(range(len(captions))), list(captions), disk_cache=True)

    def match(self, prompts: list[str], embeddings: torch.Tensor | None = None, top: int = 3) -> list[Match]:
        """Best owner per prompt by max cosine similarity over its anchors; `embeddings` (P, 384) if already known."""
        from ddpm.text.encoder import load_encoder

        emb = embeddings if embeddings is not None else load_encoder().encode(prompts)
        sims = emb @ self.embeddings.T  # (P, A)
        per_owner = torch.full((len(prompts), len(self.names)), -2.0)
        per_owner.scatter_reduce_(1, self.owners.expand(len(prompts), -1), sims, reduce="amax")  # (P, owners)
        out = []
        for p, prompt in enumerate(prompts):
            order = per_owner[p].argsort(descending=True)[:top].tolist()
            best = order[0]
            anchor = int(torch.where(self.owners == best, sims[p], torch.tensor(-2.0)).argmax())
            out.append(Match(prompt, best, self.names[best], float(per_owner[p, best]), self.anchors[anchor],
                             [(self.names[o], float(per_owner[p, o])) for o in order]))
        return out


def match_classes(prompts: list[str], class_names: Sequence[str], aliases: dict[str, list[str]] | None = None,
                  strict: bool = False) -> list[Match]:
    """Each prompt's class (see the module doc). A far prompt gives a FarPrompt warning naming the nearest classes,
    or a UserError when strict."""
    aliases = aliases or {}
    prompts = [clean_prompt(p) for p in prompts]
    exact = [exact_class(p, class_names, aliases) for p in prompts]
    for p, e in zip(prompts, exact):
        if e is None and is_index(p):
            resolve_class(p, class_names, aliases)  # raises: the index is out of range
    fuzzy = [p for p, e in zip(prompts, exact) if e is None]
    found = iter(Matcher.for_classes(class_names, aliases).match(fuzzy) if fuzzy else [])
    out = [Match(p, e, class_names[e], 1.0, class_names[e], [(class_names[e], 1.0)]) if e is not None else next(found)
           for p, e in zip(prompts, exact)]
    report_far(out, strict)
    return out


def report_far(matches: list[Match], strict: bool) -> None:
    for m in matches:
        if m.far:
            if strict:
                raise UserError(m.describe() + "; rephrase it or drop --strict")
            warnings.warn(m.describe() + f"; drawing {m.name!r} anyway", FarPrompt, stacklevel=3)


@dataclass
class PromptRow:
    """How one prompt was understood: a class (class-conditioned model), a text embedding, or ignored ("none")."""

    prompt: str
    mode: str  # class | text | none (the model's conditioning)
    label: str  # the class drawn, the prompt itself, or "unconditional"
    similarity: float | None = None  # to the nearest class anchor or training caption (None: not measured)
    nearest: list[tuple[str, float]] = field(default_factory=list)  # best first
    far: bool = False


@dataclass(frozen=True)
class Vocabulary:
    """What a model knows to draw: its conditioning mode, class names and aliases, and (text models) its training
    captions, read only when a prompt needs them."""

    conditioning: str  # class | text | none
    class_names: list[str]
    aliases: dict[str, list[str]]
    captions: Callable[[], list[str]]
    layout: TextLayout = TextLayout()  # a text model's: how its condition is made from a text (text/condition.py)


def resolve_prompts(prompts: Sequence[str], known: Vocabulary, strict: bool = False) -> tuple[torch.Tensor, list[PromptRow]]:
    """Conditions for the prompts ((P,) class ids, or text conditions (P, 384) / (P, 1 + text_tokens, 384)) and
    how each was understood.
    A prompt far from every class (class mode) or training caption (text mode) gives a FarPrompt warning naming the
    nearest ones, or a UserError when strict."""
    prompts = [clean_prompt(p) for p in prompts]
    if known.conditioning == "class":
        matches = match_classes(prompts, known.class_names, known.aliases, strict)
        rows = [PromptRow(m.prompt, "class", m.name, m.similarity, m.nearest, m.far) for m in matches]
        return torch.tensor([m.index for m in matches], dtype=torch.long), rows
    if known.conditioning == "text":
        cond = text_condition(prompts, known.layout)  # (P, 384) or (P, 1 + L, 384)
        matches = Matcher.for_captions(known.captions()).match(prompts, cond if cond.dim() == 2 else cond[:, 0])
        report_far(matches, strict)
        return cond, [PromptRow(m.prompt, "text", m.prompt, m.similarity, m.nearest, m.far) for m in matches]
    raise UserError("this model is unconditional (trained with --cond none); it takes no prompt")


def resolve_negative(negative: str, known: Vocabulary, strict: bool = False,
                     drawn: Sequence[PromptRow] = ()) -> tuple[torch.Tensor, PromptRow]:
    """The condition to guide away from ((), a class id, or one text condition) and how it was understood. A class
    model refuses a negative prompt that matches no class, or the class of one of the `drawn` prompts (it would guide
    that row away from itself); a text model refuses a far one only when strict. Every error names the negative
    prompt."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FarPrompt)
        try:
            cond, (row,) = resolve_prompts([negative], known, strict=False)
        except UserError as e:
            raise UserError(f"the negative prompt: {e}") from None
    if row.far:
        near = ", ".join(f"{n!r} {s:.2f}" for n, s in row.nearest)
        if known.conditioning == "class":
            raise UserError(f"the negative prompt {negative!r} matches no class of this model (nearest: {near}); "
                            "name a class it knows or drop --negative")
        if strict:
            raise UserError(f"the negative prompt {negative!r} is far from everything this model knows "
                            f"(nearest: {near}); rephrase it or drop --strict")
    same = [r for r in drawn if known.conditioning == "class" and r.label == row.label]
    if same:
        raise UserError(f"the negative prompt {negative!r} names the same class as the prompt {same[0].prompt!r} "
                        f"({row.label}); leave it empty or name another class")
    for w in caught:
        if not issubclass(w.category, FarPrompt):
            warnings.warn(w.message, w.category)
    return cond[0], row


def class_prompt_embeddings(class_names: Sequence[str], ids: torch.Tensor, layout: TextLayout) -> torch.Tensor:
    """(N,) class ids -> the text conditions of "a <class name>" (how a text model trained on class folders is asked
    for a class): (N, 384) or (N, 1 + layout.tokens, 384)."""
    return text_condition([article(n) for n in class_names], layout)[ids]  # (classes, ...) -> (N, ...)
