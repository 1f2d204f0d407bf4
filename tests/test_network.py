import json

import pytest
import torch

from ddpm.config import ModelConfig
from ddpm.network.layers import timestep_embedding
from ddpm.network.unet import UNet


def tiny(**kw) -> ModelConfig:
    base = dict(image_size=32, channels=1, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                attention_resolutions=(16,), num_heads=2, num_classes=3)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("size,channels,mults,attn", [
    (28, 1, (1, 2, 2), (7,)),
    (32, 1, (1, 2, 2), (8,)),
    (32, 3, (1, 2, 2, 2), (8, 4)),
    (64, 3, (1, 2, 2, 2), (16,)),
])
def test_output_shape_matches_input(size, channels, mults, attn):
    model = UNet(tiny(image_size=size, channels=channels, channel_mults=mults, attention_resolutions=attn))
    x = torch.randn(2, channels, size, size)
    out = model(x, torch.tensor([0, 999]), torch.tensor([0, 3]))
    assert out.shape == x.shape


def test_attention_is_placed_at_requested_resolutions():
    from ddpm.network.attention import Attention

    with_attn = UNet(tiny(image_size=32, channel_mults=(1, 2), attention_resolutions=(16,)))
    without = UNet(tiny(image_size=32, channel_mults=(1, 2), attention_resolutions=()))
    n_with = sum(isinstance(m, Attention) for m in with_attn.modules())
    n_without = sum(isinstance(m, Attention) for m in without.modules())
    assert n_without == 1  # the middle block always attends
    assert n_with == 1 + 1 + 2  # + one down block and two up blocks at 16 px


def test_image_size_must_divide_by_downsampling_factor():
    with pytest.raises(ValueError, match="multiple of 4"):
        UNet(tiny(image_size=30, channel_mults=(1, 2, 2)))


def test_condition_and_time_change_the_output():
    model = UNet(tiny())
    for p in model.parameters():  # zero-initialised output layers would hide the dependence
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(1, 1, 32, 32)
    base = model(x, torch.tensor([10]), torch.tensor([0]))
    assert not torch.allclose(base, model(x, torch.tensor([10]), torch.tensor([1])))
    assert not torch.allclose(base, model(x, torch.tensor([500]), torch.tensor([0])))
    assert not torch.allclose(base, model(x, torch.tensor([10]), torch.tensor([3])))  # the null id has its own row


def test_fresh_model_predicts_zero():
    """The output convolution is zero-initialised, so training starts from eps_hat = 0 (loss = E[eps^2] = 1)."""
    model = UNet(tiny())
    out = model(torch.randn(2, 1, 32, 32), torch.tensor([1, 2]), torch.tensor([0, 1]))
    assert torch.count_nonzero(out) == 0


def test_timestep_embedding_is_sinusoidal():
    emb = timestep_embedding(torch.tensor([0, 7]), 8)
    assert emb.shape == (2, 8)
    # t = 0: cos terms are 1 and sin terms 0
    assert torch.allclose(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 4)
    assert torch.allclose(emb[1, :4], torch.cos(7 * freqs), atol=1e-6)
    assert torch.allclose(emb[1, 4:], torch.sin(7 * freqs), atol=1e-6)


def _gradients(model: UNet, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(x, t, c).pow(2).mean().backward()
    return [p.grad.clone() for p in model.parameters()]


def test_gradient_checkpointing_gives_the_same_gradients():
    """Recomputing each block in backward (less memory) must not change the function or its gradients."""
    config = tiny(dropout=0.2)
    torch.manual_seed(0)
    plain = UNet(config)
    for p in plain.parameters():  # non-zero output layers, so every parameter gets a gradient
        torch.nn.init.normal_(p, std=0.05)
    ckpt = UNet(tiny(dropout=0.2, checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    x, t, c = torch.randn(3, 1, 32, 32), torch.tensor([1, 500, 999]), torch.tensor([0, 2, 3])
    torch.manual_seed(1)  # the same dropout masks in both runs; checkpointing replays them in the recomputation
    expected = _gradients(plain, x, t, c)
    torch.manual_seed(1)
    got = _gradients(ckpt, x, t, c)
    assert all(g.abs().sum() > 0 for g in expected)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_checkpointing_round_trips_through_the_config_and_old_configs_load():
    from ddpm.config import RunConfig

    config = RunConfig(model=tiny(checkpointing=True))
    assert RunConfig.from_dict(json.loads(config.to_json())).model.checkpointing is True
    old = json.loads(RunConfig().to_json())
    del old["model"]["checkpointing"]  # a config written before the option existed
    assert RunConfig.from_dict(old).model.checkpointing is False


def assert_bf16_attention_matches_fused(attend, q, k, v, g, keep=None) -> None:
    """attend on bf16 leaves that require grad (the training path) against torch's fused kernel in fp32: values
    and the gradients of q, k, v to bf16 precision; with `keep` (B, M), the fused kernel gets it as its mask."""
    leaves = [t.to(torch.bfloat16).requires_grad_() for t in (q, k, v)]
    out = attend(*leaves, keep)
    out.backward(g.to(torch.bfloat16))
    ref_leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    mask = None if keep is None else keep[:, None, None, :]
    ref = torch.nn.functional.scaled_dot_product_attention(*ref_leaves, attn_mask=mask)
    ref.backward(g)
    torch.testing.assert_close(out.float(), ref, rtol=0.02, atol=0.02)
    for a, b in zip(leaves, ref_leaves):
        torch.testing.assert_close(a.grad.float(), b.grad, rtol=0.05, atol=0.05)


def record_softmax_attention(monkeypatch) -> list[int]:
    """The batch size of every softmax_attention call attend makes from now on (one call per chunk)."""
    import ddpm.network.attention as network

    calls: list[int] = []
    inner = network.softmax_attention
    monkeypatch.setattr(network, "softmax_attention",
                        lambda q, k, v, keep=None: calls.append(q.shape[0]) or inner(q, k, v, keep))
    return calls


def test_cpu_training_attention_matches_the_fused_kernel(monkeypatch):
    """bf16 training on CPU takes the explicit softmax(q k^T / sqrt(d)) v path (faster backward), here in one piece;
    it must agree with torch's fused kernel in value and gradient to bf16 precision."""
    from ddpm.network.attention import attend

    calls = record_softmax_attention(monkeypatch)
    torch.manual_seed(0)
    assert_bf16_attention_matches_fused(attend, *(torch.randn(2, 4, 49, 16) for _ in range(4)))
    assert calls == [2]


@pytest.mark.parametrize("chunk_elements, chunks", [(5 * 4 * 64 * 9, [5]), (2 * 4 * 64 * 9, [2, 2, 1])])
def test_cpu_training_cross_attention_with_padding_matches_the_masked_fused_kernel(monkeypatch, chunk_elements,
                                                                                    chunks):
    """Cross-attention trains through the explicit path too, padding keys masked out (-inf before the softmax), in
    one piece or in chunks that take their own rows of the mask; values and gradients must match the fused kernel
    with the same boolean mask, and the masked keys' values must get no gradient."""
    import ddpm.network.attention as network

    calls = record_softmax_attention(monkeypatch)
    monkeypatch.setattr(network, "CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(2)
    q, g = torch.randn(5, 4, 64, 16), torch.randn(5, 4, 64, 16)  # 8x8 positions
    k, v = torch.randn(5, 4, 9, 16), torch.randn(5, 4, 9, 16)  # a null token and up to 8 caption tokens
    keep = torch.arange(9)[None, :] < torch.tensor([1, 3, 9, 5, 2])[:, None]  # (5, 9): 1, 3, 9, 5, 2 tokens kept
    assert_bf16_attention_matches_fused(network.attend, q, k, v, g, keep)
    assert calls == chunks
    vb = v.to(torch.bfloat16).requires_grad_()
    network.attend(q.to(torch.bfloat16).requires_grad_(), k.to(torch.bfloat16), vb, keep).sum().backward()
    assert vb.grad[~keep[:, None, :, None].expand_as(vb)].abs().max() == 0  # padding is never read
    assert vb.grad[keep[:, None, :, None].expand_as(vb)].abs().min() > 0


@pytest.mark.parametrize("chunk_elements, chunks", [(2 * 4 * 49 * 49, [2, 2, 1]), (1, [1, 1, 1, 1, 1])])
def test_cpu_training_attention_in_batch_chunks_matches_the_fused_kernel(monkeypatch, chunk_elements, chunks):
    """With more attention weights than CHUNK_ELEMENTS the explicit path runs the batch in chunks (2, 2, 1: the last
    one short; or one image each when even one image is over); on the model's non-contiguous (B, heads, N, d)
    views, values and gradients of every image must still match the fused kernel in fp32."""
    import ddpm.network.attention as network

    calls = record_softmax_attention(monkeypatch)
    monkeypatch.setattr(network, "CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(1)
    q, k, v = (torch.randn(5, 4, 16, 49).transpose(-1, -2) for _ in range(3))  # as Attention.forward makes them
    g = torch.randn(5, 4, 49, 16)
    assert not q.is_contiguous()
    assert_bf16_attention_matches_fused(network.attend, q, k, v, g)
    assert calls == chunks
    calls.clear()
    network.attend(*(t.to(torch.bfloat16) for t in (q, k, v)))  # no gradient wanted (sampling): fused, no chunks
    # past EXPLICIT_MAX_TOKENS the fused kernel again, even when training in bf16
    n = network.EXPLICIT_MAX_TOKENS + 1
    big = [torch.randn(1, 1, n, 8).to(torch.bfloat16).requires_grad_() for _ in range(3)]
    network.attend(*big).sum().backward()
    assert calls == []
