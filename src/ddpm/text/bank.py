"""Text conditions for training: every image's captions, embedded once with the frozen sentence encoder.

Captions come from the dataset's metadata.jsonl (data/folder.py) or, for class folders and the built-in data,
from templates over the class name and its aliases (captions.py). Each unique caption is embedded once:
    in memory   CaptionBank.embeddings (U, 384), U = number of unique captions
    on disk     <cache dir>/text/<encoder id>-<sha256 of the caption list>.safetensors
so a second run on the same data (or another rank) loads instead of encoding. A model that attends to tokens
(config.model.text_tokens > 0) also keeps every caption's token states, ragged (captions differ in length):
    tokens  (sum of L_u, 384) float16, caption u's rows at offsets[u] : offsets[u + 1]
(made as the model's TextLayout says, e.g. clause by clause: text/condition.py; each layout in a file of its own)
and its condition is packed at pick time (text/condition.py). At each training step image i takes caption
per_image[i][k] with k drawn from that sample's own generator (training.draw_batch).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ddpm.common.files import UnreadableFile, read_safetensors, write_safetensors
from ddpm.data.cache import default_cache_dir
from ddpm.data.dataset import ImageData
from ddpm.text.captions import class_captions
from ddpm.text.condition import TextLayout, pack, token_states


@dataclass
class CaptionBank:
    texts: list[str]  # unique captions
    embeddings: torch.Tensor  # (U, 384) float32 unit vectors, row u embeds texts[u]
    per_image: list[list[int]]  # caption ids of image i (at least one each)
    text_tokens: int = 0  # the model's config.model.text_tokens (0: sentence embeddings only)
    tokens: torch.Tensor | None = None  # (sum of L_u, 384) float16 token states, when text_tokens > 0
    offsets: torch.Tensor | None = None  # (U + 1,) int64: caption u's token rows are offsets[u]:offsets[u + 1]

    def condition(self, ids: list[int]) -> torch.Tensor:
        """The conditions of captions `ids`: (len, 384) or (len, 1 + text_tokens, 384) (text/condition.py)."""
        if self.text_tokens == 0:
            return self.embeddings[ids]
        assert self.tokens is not None and self.offsets is not None
        states = [self.tokens[self.offsets[u] : self.offsets[u + 1]].float() for u in ids]
        return pack(self.embeddings[ids], states, self.text_tokens)

    def pick(self, image: int, generator: torch.Generator) -> torch.Tensor:
        """(1, ...): the condition of one of image `image`'s captions, chosen by `generator` (uniformly)."""
        ids = self.per_image[image]
        k = int(torch.randint(len(ids), (1,), generator=generator)) if len(ids) > 1 else 0
        return self.condition([ids[k]])

    def preview(self, count: int = 10) -> torch.Tensor:
        """The conditions of the first captions, for TensorBoard sample grids."""
        return self.condition(list(range(min(count, len(self.texts)))))


def image_captions(data: ImageData) -> list[list[str]]:
    """Each image's captions: its own from metadata.jsonl, else the templates of its class and the class's aliases."""
    by_class = [class_captions(name) + [c for a in data.aliases.get(name, []) for c in class_captions(a)]
                for name in data.class_names]
    own = data.captions or [[] for _ in range(len(data))]
    labels = data.labels.tolist()
    return [[c.strip() for c in caps if c.strip()] or by_class[label] for caps, label in zip(own, labels)]


def embed_texts(texts: list[str], cache_dir: Path | None = None,
                layout: TextLayout = TextLayout()) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(len(texts), 384) embeddings and, when `layout.tokens`, the ragged token states (float16) of that layout
    and their offsets; read from the disk cache when this exact list was embedded before."""
    from ddpm.text.encoder import ENCODER_ID, load_encoder

    key = hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()[:32]
    folder = (cache_dir or default_cache_dir()) / "text"
    with_tokens = layout.tokens > 0
    path = folder / f"{ENCODER_ID}-{key}{layout.tag + '-tokens' if with_tokens else ''}.safetensors"
    # the embeddings alone (the whole texts' either way) are also in the tokens files of the same list (a text run's
    # captions, embedded while training, when `ddpm sample` compares prompts with them): read one rather than run
    # the encoder again
    readable = [path] if with_tokens else [path, *sorted(folder.glob(f"{ENCODER_ID}-{key}*-tokens.safetensors"))]
    for found in (p for p in readable if p.is_file()):
        try:
            t = read_safetensors(found)[0]
            if len(t["embeddings"]) != len(texts):
                continue
            if not with_tokens:
                return t["embeddings"], None, None
            if len(t["offsets"]) == len(texts) + 1 and int(t["offsets"][-1]) == len(t["tokens"]):
                return t["embeddings"], t["tokens"], t["offsets"]
        except (UnreadableFile, KeyError):  # a damaged cache file is rebuilt
            pass
    tensors: dict[str, torch.Tensor]
    if with_tokens:
        emb, states = token_states(texts, layout)
        offsets = torch.tensor([0] + [len(s) for s in states]).cumsum(0)
        tokens = torch.cat(states).half() if states else torch.empty(0, emb.shape[1], dtype=torch.half)
        tensors = {"embeddings": emb, "tokens": tokens, "offsets": offsets}
    else:
        emb = load_encoder().encode(texts)
        tensors = {"embeddings": emb}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_safetensors(path, tensors, metadata={"encoder": ENCODER_ID, "count": str(len(texts))})
    except OSError:
        pass  # an unwritable cache only costs the encoding next time
    return emb, tensors.get("tokens"), tensors.get("offsets")


def build_caption_bank(data: ImageData, cache_dir: Path | None = None,
                       layout: TextLayout = TextLayout()) -> CaptionBank:
    """Captions of every image of `data` and their embeddings (see the module doc), made as the model's `layout`
    says (TextLayout.of(config.model))."""
    captions = image_captions(data)
    index: dict[str, int] = {}
    per_image = [[index.setdefault(c, len(index)) for c in caps] for caps in captions]
    texts = list(index)
    emb, tokens, offsets = embed_texts(texts, cache_dir, layout)
    if offsets is not None:
        long = int(((offsets[1:] - offsets[:-1]) > layout.tokens).sum())
        if long:
            from ddpm.text.encoder import PromptTruncated

            warnings.warn(f"{long:,} of {len(texts):,} captions have more than {layout.tokens} tokens; the model "
                          f"attends to their first {layout.tokens} (raise --text-tokens to see more)", PromptTruncated)
    return CaptionBank(texts, emb, per_image, layout.tokens, tokens, offsets)
