"""The condition tensor of a text-conditioned model, made from texts (network/unet.py reads it).

    text_tokens = 0   c (N, 384): the unit sentence embedding (the mean of the caption's token states)
    text_tokens = L   c (N, 1 + L, 384): row 0 the sentence embedding; rows 1..L the last layer's states of the
                      caption's first L tokens ([CLS] first, then its words and [SEP]), zero rows after its last token
    null caption      c = 0 in every row (classifier-free guidance's unconditional branch): a unit embedding is
                      never zero, nor is a token state after BERT's LayerNorm, so zero rows mark absence exactly

The layout of a model's condition is its TextLayout (config.model's text_tokens, text_clauses and clause_positions).
With clauses (the default since format 6) the token rows come from the caption's clauses, each encoded on its own
and concatenated in order, [CLS] and [SEP] of each kept:
    "a red circle above a blue square" -> "a red circle" | "above a blue square"
    rows 1..L = [CLS a red circle SEP] [CLS above a blue square SEP]      (L = 5 + 6 here, against 9 in one piece)
    positions    0   1  2    3     4     5    6   7   8    9     10       (BERT's position ids: continued, format 7)
A caption splits before each relation word (CLAUSE_BREAK); one with none is encoded whole, as before. Encoded in one
piece, MiniLM's self-attention mixes every word's state with the others', so "red" in that caption carries some of
"blue" and "square": the UNet then has to unbind what the encoder bound. Encoded apart, each object's words reach
the cross-attention unmixed, and two-object scenes come out swapped far less often (docs/text.md, "Clauses"; the
same idea as Feng et al. 2023, "Training-free structured diffusion guidance", which encodes noun phrases apart).
Since format 7 each clause's position ids continue where the previous clause ended, so its states still say where
in the caption it stands: with every clause from position 0 (format 6) the two objects' rows differ only in their
words, and shapes were swapped more often (docs/text.md, "Clauses that keep their place in the sentence").
The sentence embedding (row 0) is always the whole caption's: prompts are matched to captions by it.

Token states are rounded to float16 (the bank stores them so, ~1e-3 relative), here and in the bank alike, so that a
prompt at sampling time has the precision its caption had in training (equal bits for the same batch of texts; a
different batch moves the encoder's float32 output by ~1e-6 before the rounding). The encoder is imported only when a
text is encoded (`import ddpm` does not load it).
"""

from __future__ import annotations

import itertools
import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ddpm.config import ModelConfig

# where a caption is split into clauses: before a relation between objects (lookahead, so the relation word opens
# the next clause: "a red circle" | "above a blue square"); whole words only, any case
CLAUSE_BREAK = re.compile(r"\s+(?=(?:above|below|to the left of|to the right of|and|next to|beside|under|over|on top of)\s)",
                          re.IGNORECASE)


@dataclass(frozen=True)
class TextLayout:
    """How a text model's condition is made from a text (the module doc); `TextLayout.of(config.model)`."""

    tokens: int = 0  # token rows after the sentence embedding (config.model.text_tokens); 0: the embedding alone
    clauses: bool = False  # with tokens: each clause encoded apart (text_clauses, format 6)
    continued: bool = False  # with clauses: each clause's positions continue the last one's (clause_positions, 7)

    @classmethod
    def of(cls, model: ModelConfig) -> TextLayout:
        return cls(model.text_tokens, model.text_clauses, model.clause_positions)

    @property
    def tag(self) -> str:
        """What sets apart the token states of two layouts in a file name (the bank's cache, text/bank.py)."""
        return "-clauses-pos" if self.clauses and self.continued else "-clauses" if self.clauses else ""


def clauses(text: str) -> list[str]:
    """The clauses of `text` in order (the text itself when it names no relation)."""
    return [c for c in CLAUSE_BREAK.split(text) if c] or [text]


def token_states(texts: list[str], layout: TextLayout) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(N, 384) sentence embeddings of the whole texts and each text's token states (L_i, 384): of the text in one
    piece, or (`layout.clauses`) of its clauses encoded apart and concatenated (see the module doc)."""
    from ddpm.text.encoder import MAX_TOKENS, load_encoder

    encoder = load_encoder()
    pooled, states = encoder.encode_tokens(texts)
    if not layout.clauses:
        return pooled, states
    parts = {i: p for i, p in enumerate(map(clauses, texts)) if len(p) > 1}  # a text of one clause keeps its states
    unique = list(dict.fromkeys(c for p in parts.values() for c in p))
    length = {c: len(e.ids) for c, e in zip(unique, encoder.tokenizer.encode_batch(unique))}  # [CLS], [SEP] included
    # clause j starts where clauses 0..j-1 end (capped to fit the position table), or at 0 (format 6)
    placed = {i: [(c, min(at, MAX_TOKENS) if layout.continued else 0)
                  for c, at in zip(p, itertools.accumulate((length[c] for c in p), initial=0))] for i, p in parts.items()}
    wanted = dict.fromkeys(piece for p in placed.values() for piece in p)  # "a red circle" at 0: once for all texts
    _, encoded = encoder.encode_tokens([c for c, _ in wanted], starts=[at for _, at in wanted])
    pieces = dict(zip(wanted, encoded))
    for i, p in placed.items():
        states[i] = torch.cat([pieces[piece] for piece in p])  # (sum of its clauses' L, 384)
    return pooled, states


def pack(pooled: torch.Tensor, tokens: list[torch.Tensor], text_tokens: int) -> torch.Tensor:
    """pooled (N, 384) and N token-state tensors (L_i, 384) -> the condition (see the module doc)."""
    if text_tokens == 0:
        return pooled
    out = torch.zeros(len(pooled), 1 + text_tokens, pooled.shape[-1])
    out[:, 0] = pooled
    for i, states in enumerate(tokens):
        n = min(len(states), text_tokens)
        out[i, 1 : 1 + n] = states[:n].half().float()
    return out


def text_condition(texts: list[str], layout: TextLayout) -> torch.Tensor:
    """Texts -> their conditions, (N, 384) or (N, 1 + layout.tokens, 384). A text with more tokens than the model
    attends to gives a PromptTruncated warning: its sentence embedding still reads all of it, which only a model
    with sentence FiLM (formats 3-4, or --sentence-film) sees."""
    from ddpm.text.encoder import PromptTruncated, load_encoder

    if layout.tokens == 0:
        return load_encoder().encode(texts)
    pooled, tokens = token_states(texts, layout)
    for text, states in zip(texts, tokens):
        if len(states) > layout.tokens:
            warnings.warn(f"{text[:40]!r} has {len(states)} tokens; this model attends to the first {layout.tokens} "
                          "(the rest reach it only through the sentence embedding, where it has sentence FiLM)",
                          PromptTruncated, stacklevel=2)
    return pack(pooled, tokens, layout.tokens)

