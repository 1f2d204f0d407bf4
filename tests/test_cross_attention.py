"""Token-level text conditioning: the condition's layout (text/condition.py), the caption bank's copy of it, and the
UNet's cross-attention (network/attention.py CrossAttention, network/unet.py UNet.condition)."""

import math

import pytest
import torch

from ddpm.config import ModelConfig
from ddpm.diffusion.guidance import drop_condition, guided_eps
from ddpm.network.attention import CrossAttention
from ddpm.network.unet import UNet
from ddpm.text.condition import TextLayout

L = 12  # text_tokens of the small models here
CLAUSES = TextLayout(L, clauses=True, continued=True)  # the default layout since format 7


def _model(text_tokens: int = L, seed: int = 0, live: bool = True, positions: bool = True, film: bool = False) -> UNet:
    """A small text UNet; `live`: the zero-initialised output projections given random weights, so that every path
    (cross-attention included) reaches the output; `film`: the sentence embedding's FiLM path too (formats 3-4)."""
    torch.manual_seed(seed)
    m = UNet(ModelConfig(image_size=16, channels=3, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                         attention_resolutions=(8,), num_heads=2, cond="text", text_tokens=text_tokens,
                         cross_positions=positions, sentence_film=film))
    if live:
        for p in m.parameters():
            if p.dim() > 1 and not p.any():
                torch.nn.init.normal_(p, std=0.05)
    return m.eval()


def _condition(lengths: list[int], text_tokens: int = L, seed: int = 1) -> torch.Tensor:
    """Random conditions in the layout of text/condition.py: unit row 0, `lengths[i]` token rows, zero padding."""
    g = torch.Generator().manual_seed(seed)
    c = torch.zeros(len(lengths), 1 + text_tokens, 384)
    c[:, 0] = torch.nn.functional.normalize(torch.randn(len(lengths), 384, generator=g), dim=-1)
    for i, n in enumerate(lengths):
        c[i, 1 : 1 + n] = torch.randn(n, 384, generator=g)
    return c


def _code(channels: int, h: int, w: int) -> torch.Tensor:
    """position_code written out place by place: channel 4-block (sin f y, cos f y, sin f x, cos f x) per frequency
    group, y and x spaced evenly over [-1, 1], f_j = pi/2 * 8^(j / (n - 1))."""
    n = channels // 4
    out = torch.zeros(channels, h, w)
    for i in range(h):
        for j in range(w):
            y, x = -1 + 2 * i / (h - 1), -1 + 2 * j / (w - 1)
            for k in range(n):
                f = math.pi / 2 * 8 ** (k / max(n - 1, 1))
                out[k, i, j], out[n + k, i, j] = math.sin(f * y), math.cos(f * y)
                out[2 * n + k, i, j], out[3 * n + k, i, j] = math.sin(f * x), math.cos(f * x)
    return out


@pytest.mark.parametrize("channels, h, w", [(16, 5, 5), (18, 3, 7), (64, 8, 8)])
def test_position_code_is_the_closed_form_and_tells_every_place_apart(channels, h, w):
    from ddpm.network.layers import position_code

    code = position_code(channels, h, w)
    torch.testing.assert_close(code, _code(channels, h, w), atol=1e-5, rtol=0)
    assert code[4 * (channels // 4) :].abs().sum() == 0  # the remainder (if any) is zero
    assert code[0, 0].eq(-1).all() and code[0, -1].eq(1).all()  # sin(pi/2 y): -1 on the top row, +1 at the bottom
    places = code.reshape(channels, -1).T  # (HW, C)
    gaps = torch.cdist(places, places) + torch.eye(h * w) * 1e9
    assert gaps.min() > 0.5  # no two places share a code


@pytest.mark.parametrize("positions", [False, True])
def test_cross_attention_matches_attention_over_the_kept_tokens_only(positions):
    """An independent computation: for each image, softmax over exactly its kept tokens (the others sliced away, not
    masked), heads split by hand; with positions, the queries read GN(x) + the written-out position code."""
    torch.manual_seed(0)
    block = CrossAttention(16, 24, num_heads=4, positions=positions)
    torch.nn.init.normal_(block.proj.weight, std=0.1)
    x, context = torch.randn(3, 16, 5, 5), torch.randn(3, 7, 24)
    keep = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0], [1] * 7], dtype=torch.bool)
    out = block(x, context, keep)
    for b in range(3):
        normed = block.norm(x[b : b + 1]) + (_code(16, 5, 5) if positions else 0)
        q = block.q(normed)[0].reshape(16, 25).T  # (HW, C)
        kv = block.kv(context[b][keep[b]])  # (M_b, 2C)
        k, v = kv[:, :16], kv[:, 16:]
        heads = []
        for h in range(4):
            s = slice(4 * h, 4 * h + 4)
            w = torch.softmax(q[:, s] @ k[:, s].T / math.sqrt(4), dim=-1)  # (HW, M_b)
            heads.append(w @ v[:, s])
        attended = torch.cat(heads, dim=1).T.reshape(1, 16, 5, 5)
        ref = x[b : b + 1] + block.proj(attended)
        torch.testing.assert_close(out[b : b + 1], ref, atol=1e-5, rtol=1e-5)


def test_padding_rows_do_not_change_the_output():
    """A caption's condition padded with more zero rows (a model attending to more tokens) gives the same eps."""
    short, long = _model(L), _model(L + 9)
    long.load_state_dict(short.state_dict())  # no parameter depends on text_tokens
    c = _condition([3, 12, 1])
    padded = torch.cat([c, torch.zeros(3, 9, 384)], dim=1)
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([3, 400, 999])
    with torch.no_grad():
        torch.testing.assert_close(long(x, t, padded), short(x, t, c), atol=1e-5, rtol=1e-5)


def test_without_sentence_film_the_caption_reaches_the_model_through_its_tokens_alone():
    """The default since format 5: no FiLM weights for the sentence embedding, and row 0 of the condition (the
    sentence embedding) changes nothing, while one token row does; the null caption still differs from a caption."""
    m = _model()
    assert not hasattr(m, "text_mlp") and not hasattr(m, "null_text")
    c = _condition([5, 9])
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([100, 900])
    sentence, token = c.clone(), c.clone()
    sentence[:, 0] = torch.nn.functional.normalize(torch.randn(2, 384), dim=-1)
    token[:, 2] = torch.randn(2, 384)
    with torch.no_grad():
        torch.testing.assert_close(m(x, t, sentence), m(x, t, c), atol=0, rtol=0)
        assert (m(x, t, token) - m(x, t, c)).abs().amax() > 1e-3
        assert (m(x, t, torch.zeros_like(c)) - m(x, t, c)).abs().amax() > 1e-3
        with pytest.raises(ValueError, match="token states"):  # a sentence alone would be silently ignored
            m(x, t, c[:, 0])


def test_the_tokens_reach_the_output_and_a_new_film_model_is_the_sentence_model():
    """With sentence_film (formats 3-4): changing one real token changes eps; at initialisation (zero output
    projections) the cross-attention blocks are the identity, so a new token model computes exactly what the
    sentence-embedding model with the same weights computes."""
    m = _model(film=True)
    c = _condition([5, 5])
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([100, 100])
    other = c.clone()
    other[:, 3] = torch.randn(2, 384)  # (a constant shift would vanish in the context LayerNorm)
    with torch.no_grad():
        assert (m(x, t, other) - m(x, t, c)).abs().amax() > 1e-3
    fresh, sentence = _model(live=False, film=True), _model(0, live=False)
    missing = sentence.load_state_dict(fresh.state_dict(), strict=False)
    assert not missing.missing_keys and all("cross" in k or k in ("context_norm.weight", "context_norm.bias", "null_token")
                                            for k in missing.unexpected_keys)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, t, c), sentence(x, t, c[:, 0]))


def test_the_null_caption_attends_to_the_null_token_alone():
    """All-zero conditions are the null caption whatever the layout's length, and differ from a real caption."""
    short, long = _model(L), _model(L + 4)
    long.load_state_dict(short.state_dict())
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 700])
    with torch.no_grad():
        null = short(x, t, torch.zeros(2, 1 + L, 384))
        torch.testing.assert_close(long(x, t, torch.zeros(2, 1 + L + 4, 384)), null)
        assert (short(x, t, _condition([4, 4])) - null).abs().amax() > 1e-3


def test_guidance_and_condition_dropout_with_token_conditions():
    """drop_condition zeroes whole conditions (every row); guided_eps's batched branches equal the two separate
    forwards combined as eps_u + w (eps_c - eps_u)."""
    c = _condition([2, 7, 12, 4])
    dropped = drop_condition(c, 0, 0.5, torch.Generator().manual_seed(1))  # a seed that drops some, not all
    gone = (dropped.reshape(4, -1) == 0).all(dim=1)
    assert 0 < int(gone.sum()) < 4
    assert torch.equal(dropped[~gone], c[~gone])
    m = _model()
    x, t = torch.randn(4, 3, 16, 16), torch.full((4,), 250)
    with torch.no_grad():
        eps_c, eps_u = m(x, t, c), m(x, t, torch.zeros_like(c))
        torch.testing.assert_close(guided_eps(m, x, t, c, 0, 3.0), eps_u + 3.0 * (eps_c - eps_u), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(guided_eps(m, x, t, c, 0, 0.0), eps_u)


# ---- the condition made from text (needs the MiniLM weights) --------------------------------------------------------

@pytest.fixture(scope="module")
def encoder():
    from ddpm.text.encoder import load_encoder

    return load_encoder()


def test_the_condition_layout_from_text(encoder):
    from ddpm.text.condition import text_condition

    texts = ["a red circle above a blue square", "a green triangle"]
    pooled, states = encoder.encode_tokens(texts)
    torch.testing.assert_close(pooled, encoder.encode(texts))
    assert [len(s) for s in states] == [len(encoder.tokenizer.encode(t).ids) for t in texts]  # [CLS] ... [SEP]
    c = text_condition(texts, TextLayout(L))
    assert c.shape == (2, 1 + L, 384)
    assert torch.equal(c[:, 0], pooled)
    for i, s in enumerate(states):
        assert torch.equal(c[i, 1 : 1 + len(s)], s.half().float())
        assert not c[i, 1 + len(s) :].any() and c[i, 1 : 1 + len(s)].abs().amax(-1).min() > 0
    assert torch.equal(text_condition(texts, TextLayout(0)), pooled)
    with pytest.warns(UserWarning, match="attends to the first 4"):
        cut = text_condition(texts[:1], TextLayout(4))
    torch.testing.assert_close(cut[0, 1:], c[0, 1:5], atol=2e-3, rtol=0)  # alone vs in a batch: float16 ulp


def test_token_states_keep_what_the_sentence_embedding_loses(encoder):
    """The motivation, measured: swapping which colour goes with which shape barely moves the sentence embedding
    (cosine >= 0.98) but moves the token states of the colour words far apart."""
    a, b = "a red circle above a blue square", "a blue circle above a red square"
    (pa, pb), (sa, sb) = encoder.encode_tokens([a, b])
    assert float(pa @ pb) >= 0.98
    word = 2  # [CLS] a red|blue ...
    cos = torch.nn.functional.cosine_similarity(sa[word], sb[word], dim=0)
    assert cos < 0.9


def test_the_bank_gives_training_the_condition_sampling_gives(tmp_path, encoder, monkeypatch):
    """A caption picked in training and the same texts typed as prompts are the same tensor, bit for bit (token
    states rounded to float16 in both, the same batch of texts); the bank's token cache is read back on the second
    build."""
    from ddpm.data.dataset import ImageData
    from ddpm.text.bank import build_caption_bank
    from ddpm.text.condition import text_condition

    captions = [["a small red square", "something red"], ["a large blue circle on the left of a green star"]]
    data = ImageData(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]), ["a", "b"], captions=captions)
    with pytest.warns(UserWarning, match="1 of 3 captions have more than 12 tokens"):
        bank = build_caption_bank(data, tmp_path, TextLayout(L))
    with pytest.warns(UserWarning, match="13 tokens; this model attends to the first 12"):
        typed = text_condition(bank.texts, TextLayout(L))
    assert torch.equal(bank.condition(list(range(len(bank.texts)))), typed)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(bank.pick(1, g), typed[2:3])
    import ddpm.text.encoder as minilm

    monkeypatch.setattr(minilm, "load_encoder", lambda: (_ for _ in ()).throw(AssertionError("encoder called")))
    with pytest.warns(UserWarning):
        cached = build_caption_bank(data, tmp_path, TextLayout(L))
    assert torch.equal(cached.condition([0, 1, 2]), typed)


@pytest.mark.parametrize("text, expected", [
    ("a red circle above a blue square", ["a red circle", "above a blue square"]),
    ("a blue triangle to the left of a yellow square", ["a blue triangle", "to the left of a yellow square"]),
    ("two shapes: a red circle at the top and a blue square at the bottom",
     ["two shapes: a red circle at the top", "and a blue square at the bottom"]),
    ("A cat Beside a dog next to a tree", ["A cat", "Beside a dog", "next to a tree"]),
    ("a small green triangle on the left", ["a small green triangle on the left"]),  # no relation: whole
    ("sandy andes overlooking a brandy glass", ["sandy andes overlooking a brandy glass"]),  # words inside words
    ("above a red square", ["above a red square"]),  # a relation word first opens no empty clause
    ("", [""]),
])
def test_a_caption_splits_before_each_relation_word(text, expected):
    from ddpm.text.condition import clauses

    assert clauses(text) == expected


def test_with_clauses_the_token_rows_are_each_clause_encoded_apart(encoder):
    """Row 0 stays the whole caption's sentence embedding; rows 1.. are the clauses' own token states, [CLS] and
    [SEP] of each kept, in order (checked against the encoder run on each clause alone, the second from the
    position where the first ends); a caption of one clause gets exactly the condition it gets without clauses."""
    from ddpm.text.condition import text_condition

    texts = ["a red circle above a blue square", "a green triangle"]
    c = text_condition(texts, CLAUSES)
    whole = text_condition(texts, TextLayout(L))
    assert torch.equal(c[:, 0], whole[:, 0]) and torch.equal(c[1], whole[1])
    _, red = encoder.encode_tokens(["a red circle"])
    _, blue = encoder.encode_tokens(["above a blue square"], starts=[5])  # positions 5..10, after red's 0..4
    n = len(red[0]) + len(blue[0])
    assert (len(red[0]), len(blue[0])) == (5, 6) and n == 11  # [CLS] a red circle [SEP] | [CLS] above a blue square [SEP]
    torch.testing.assert_close(c[0, 1 : 1 + n], torch.cat([red[0], blue[0]]).half().float(), atol=2e-3, rtol=0)
    blue_at_0 = encoder.encode_tokens(["above a blue square"])[1][0]
    assert (c[0, 6 : 1 + n] - blue_at_0.half().float()).abs().max() > 0.1  # not the clause from position 0
    restarted = text_condition(texts[:1], TextLayout(L, clauses=True, continued=False))  # a format-6 run's layout
    torch.testing.assert_close(restarted[0, 1 : 1 + n], torch.cat([red[0], blue_at_0]).half().float(), atol=2e-3, rtol=0)
    assert not c[0, 1 + n :].any()
    # unmixed: "red" encoded in its own clause no longer carries "blue square"; in one piece it does
    red_alone = encoder.encode_tokens(["a red circle"])[1][0][2]
    tied = text_condition(["a red circle above a blue square"], TextLayout(L))[0, 3]  # [CLS] a red ...: row 1 + 2
    assert torch.nn.functional.cosine_similarity(c[0, 3], red_alone.half().float(), dim=0) > 0.999
    assert torch.nn.functional.cosine_similarity(tied, red_alone, dim=0) < 0.99


def test_a_clause_shared_by_captions_at_the_same_place_is_encoded_once(encoder, monkeypatch):
    """Captions that share a clause at the same position get its states from one encoding (the bank's 7,652
    shapes-text captions have far fewer distinct clauses); each caption's rows still equal its clauses encoded
    apart, and a shared clause at another position is encoded there."""
    from ddpm.text.condition import token_states

    texts = ["a red circle above a blue square", "a red circle below a green star",
             "a big red circle above a blue square"]
    calls = []
    real = type(encoder).encode_tokens
    monkeypatch.setattr(type(encoder), "encode_tokens",
                        lambda self, t, *a, **k: calls.append(list(t)) or real(self, t, *a, **k))
    _, states = token_states(texts, CLAUSES)
    assert calls[1] == ["a red circle", "above a blue square", "below a green star", "a big red circle",
                        "above a blue square"]  # the last at start 6, after "a big red circle"
    assert torch.equal(states[0][:5], states[1][:5])
    blue_at_6 = real(encoder, ["above a blue square"], starts=[6])[1][0]
    torch.testing.assert_close(states[2][6:], blue_at_6, atol=1e-5, rtol=0)
    assert not torch.allclose(states[2][6:], states[0][5:], atol=1e-2)


def test_the_clause_bank_is_cached_apart_and_matches_typed_prompts(tmp_path, encoder, monkeypatch):
    """Training's bank with clauses gives the condition a typed prompt gets with clauses, bit for bit; the token
    cache of each layout is a file of its own (whole captions, format 6's clauses and format 7's are never read for
    one another), read back on the second build."""
    from ddpm.data.dataset import ImageData
    from ddpm.text.bank import build_caption_bank
    from ddpm.text.condition import text_condition

    captions = [["a red square above a blue circle"], ["a green star"]]
    data = ImageData(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]), ["a", "b"], captions=captions)
    plain = build_caption_bank(data, tmp_path, TextLayout(L))
    restarted = build_caption_bank(data, tmp_path, TextLayout(L, clauses=True, continued=False))
    split = build_caption_bank(data, tmp_path, CLAUSES)
    files = sorted(p.name for p in (tmp_path / "text").iterdir())
    assert len(files) == 3 and [sum(f.endswith(tag) for f in files) for tag in
                                ("-clauses-pos-tokens.safetensors", "-clauses-tokens.safetensors")] == [1, 1]
    assert not torch.equal(restarted.condition([0]), split.condition([0]))
    typed = text_condition(split.texts, CLAUSES)
    assert torch.equal(split.condition([0, 1]), typed)
    assert not torch.equal(plain.condition([0]), typed[:1]) and torch.equal(plain.condition([1]), typed[1:])
    import ddpm.text.encoder as minilm

    monkeypatch.setattr(minilm, "load_encoder", lambda: (_ for _ in ()).throw(AssertionError("encoder called")))
    assert torch.equal(build_caption_bank(data, tmp_path, CLAUSES).condition([0, 1]), typed)


@pytest.mark.parametrize("positions", [False, True])
def test_position_code_lets_the_same_features_read_different_words_at_different_places(positions):
    """A map whose every place has the same features: without the code every place attends alike (same output
    everywhere); with it the top and the bottom rows take different mixtures of the caption's tokens."""
    torch.manual_seed(3)
    block = CrossAttention(16, 24, num_heads=4, positions=positions)
    torch.nn.init.normal_(block.proj.weight, std=0.1)
    x = torch.randn(2, 16, 1, 1).expand(2, 16, 6, 6).contiguous()  # (B, C, 6, 6), constant over places
    context, keep = torch.randn(2, 5, 24), torch.ones(2, 5, dtype=torch.bool)
    delta = block(x, context, keep) - x  # what the attention added
    spread = (delta - delta[:, :, :1, :1]).abs().amax()
    assert (spread > 1e-2) if positions else (spread < 1e-5)


def test_a_format_3_text_checkpoint_loads_and_draws_as_it_was_trained():
    """A text model saved before format 4 (no cross_positions or sentence_film key) is rebuilt without the code and
    with its sentence FiLM: its weights load and it computes exactly what it did; built with the code, the same
    weights would compute something else."""
    import json

    from ddpm.config import RunConfig

    legacy = _model(positions=False, film=True)
    d = RunConfig(model=legacy.config).to_dict()
    d["format_version"] = 3
    del d["model"]["cross_positions"], d["model"]["sentence_film"]
    loaded = UNet(RunConfig.from_dict(json.loads(json.dumps(d))).model).eval()
    loaded.load_state_dict(legacy.state_dict())
    x, t, c = torch.randn(2, 3, 16, 16), torch.tensor([10, 500]), _condition([3, 7])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, c), legacy(x, t, c), atol=0, rtol=0)
        coded = UNet(ModelConfig(**{**legacy.config.__dict__, "cross_positions": True})).eval()
        coded.load_state_dict(legacy.state_dict())  # the code has no weights: the same state dict fits
        assert (coded(x, t, c) - legacy(x, t, c)).abs().max() > 1e-3
