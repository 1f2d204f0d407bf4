"""Text conditions for training: every image's captions, embedded once with the frozen sentence encoder.

Captions come from the dataset's metadata.jsonl (data/folder.py) or, for class folders and the built-in data,
from templates over the class name and its aliases (captions.py). Each unique caption is embedded once:
    in memory   CaptionBank.embeddings (U, 384), U = number of unique captions
    on disk     <cache dir>/text/<encoder id>-<sha256 of the caption list>.safetensors
so a second run on the same data (or another rank) loads instead of encoding. At each training step image i
takes caption per_image[i][k] with k drawn from that sample's own generator (training.draw_batch).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ddpm.common.files import UnreadableFile, read_safetensors, write_safetensors
from ddpm.data.cache import default_cache_dir
from ddpm.data.dataset import ImageData
from ddpm.text.captions import class_captions


@dataclass
class CaptionBank:
    texts: list[str]  # unique captions
    embeddings: torch.Tensor  # (U, 384) float32 unit vectors, row u embeds texts[u]
    per_image: list[list[int]]  # caption ids of image i (at least one each)

    def pick(self, image: int, generator: torch.Generator) -> torch.Tensor:
        """(1, 384): one of image `image`'s captions, chosen by `generator` (uniformly)."""
        ids = self.per_image[image]
        k = int(torch.randint(len(ids), (1,), generator=generator)) if len(ids) > 1 else 0
        return self.embeddings[ids[k]][None]

    def preview(self, count: int = 10) -> torch.Tensor:
        """(min(count, U), 384): the first captions, for TensorBoard sample grids."""
        return self.embeddings[:count]


def image_captions(data: ImageData) -> list[list[str]]:
    """Each image's captions: its own from metadata.jsonl, else the templates of its class and the class's aliases."""
    by_class = [class_captions(name) + [c for a in data.aliases.get(name, []) for c in class_captions(a)]
                for name in data.class_names]
    own = data.captions or [[] for _ in range(len(data))]
    labels = data.labels.tolist()
    return [[c.strip() for c in caps if c.strip()] or by_class[label] for caps, label in zip(own, labels)]


def embed_texts(texts: list[str], cache_dir: Path | None = None) -> torch.Tensor:
    """(len(texts), 384) embeddings, read from the disk cache when this exact list was embedded before."""
    from ddpm.text.encoder import ENCODER_ID, load_encoder

    key = hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()[:32]
    path = (cache_dir or default_cache_dir()) / "text" / f"{ENCODER_ID}-{key}.safetensors"
    if path.is_file():
        try:
            return read_safetensors(path)[0]["embeddings"]
        except (UnreadableFile, KeyError):  # a damaged cache file is rebuilt
            pass
    emb = load_encoder().encode(texts)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_safetensors(path, {"embeddings": emb}, metadata={"encoder": ENCODER_ID, "count": str(len(texts))})
    except OSError:
        pass  # an unwritable cache only costs the encoding next time
    return emb


def build_caption_bank(data: ImageData, cache_dir: Path | None = None) -> CaptionBank:
    """Captions of every image of `data` and their embeddings (see the module doc)."""
    captions = image_captions(data)
    index: dict[str, int] = {}
    per_image = [[index.setdefault(c, len(index)) for c in caps] for caps in captions]
    texts = list(index)
    return CaptionBank(texts, embed_texts(texts, cache_dir), per_image)
