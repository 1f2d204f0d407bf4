import pytest
import torch

from ddpm.config import ModelConfig
from ddpm.network import UNet, timestep_embedding


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
    from ddpm.network import Attention

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
