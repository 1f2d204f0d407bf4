"""The condition tensor of a text-conditioned model, made from texts (network/unet.py reads it).

    text_tokens = 0   c (N, 384): the unit sentence embedding (the mean of the caption's token states)
    text_tokens = L   c (N, 1 + L, 384): row 0 the sentence embedding; rows 1..L the last layer's states of the
                      caption's first L tokens ([CLS] first, then its words and [SEP]), zero rows after its last token
    null caption      c = 0 in every row (classifier-free guidance's unconditional branch): a unit embedding is
                      never zero, nor is a token state after BERT's LayerNorm, so zero rows mark absence exactly

Token states are rounded to float16 (the bank stores them so, ~1e-3 relative), here and in the bank alike, so that a
prompt at sampling time has the precision its caption had in training (equal bits for the same batch of texts; a
different batch moves the encoder's float32 output by ~1e-6 before the rounding). The encoder is imported only when a
text is encoded (`import ddpm` does not load it).
"""

from __future__ import annotations

import warnings

import torch


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


def text_condition(texts: list[str], text_tokens: int) -> torch.Tensor:
    """Texts -> their conditions, (N, 384) or (N, 1 + text_tokens, 384). A text with more tokens than the model
    attends to gives a PromptTruncated warning: its sentence embedding still reads all of it, which only a model
    with sentence FiLM (formats 3-4, or --sentence-film) sees."""
    from ddpm.text.encoder import PromptTruncated, load_encoder

    encoder = load_encoder()
    if text_tokens == 0:
        return encoder.encode(texts)
    pooled, tokens = encoder.encode_tokens(texts)
    for text, states in zip(texts, tokens):
        if len(states) > text_tokens:
            warnings.warn(f"{text[:40]!r} has {len(states)} tokens; this model attends to the first {text_tokens} "
                          "(the rest reach it only through the sentence embedding, where it has sentence FiLM)",
                          PromptTruncated, stacklevel=2)
    return pack(pooled, tokens, text_tokens)

