"""Editing with a trained model (diffusion/editing.py through TrainedModel.edit, inpaint and interpolate), checked
against closed forms with an exact-eps network: data that is one point per class (a point mass), as the sampler
tests use. With the exact eps of a point mass at c, x0_hat = c at every step, and DDIM (eta 0) keeps every iterate
on x_s = sqrt(ab_s) c + sqrt(1 - ab_s) e, e fixed by where the chain starts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ddpm.api import TrainedModel, class_mixture
from ddpm.common.errors import UserError
from ddpm.common.pixels import to_model_range, to_uint8
from ddpm.diffusion.editing import (
    ImageToImage,
    denoising_steps,
    inpainting_steps,
    frame_positions,
    resampling_plan,
    slerp,
)
from ddpm.diffusion.sampler import PerSampleNoise, timestep_pairs
from ddpm.diffusion.schedule import NoiseSchedule
from tests.helpers import tiny_config

S, K = 16, 10  # image side (the tiny config's), classes


class PointMasses(nn.Module):
    """The exact eps of data that is one image per class: row k of `class_emb` (the class table, as the UNet's) is
    class k's image, flattened; the null row the unconditional model's point. eps = (x_t - sqrt(ab_t) c) /
    sqrt(1 - ab_t), so a class model's condition path (the table lookup) decides the point."""

    def __init__(self, sched: NoiseSchedule, seed: int = 0) -> None:
        super().__init__()
        self.sched, self.null_id = sched, K
        gen = torch.Generator().manual_seed(seed)
        self.class_emb = nn.Embedding(K + 1, S * S)
        with torch.no_grad():
            self.class_emb.weight.copy_(torch.rand(K + 1, S * S, generator=gen) * 1.6 - 0.8)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        point = self.class_emb(c).view(-1, 1, S, S)
        ab = self.sched.alpha_bar[t].view(-1, 1, 1, 1)
        return ((x.double() - ab.sqrt() * point.double()) / (1 - ab).sqrt()).to(x.dtype)

    def point(self, k: int) -> torch.Tensor:
        return self.class_emb.weight[k].detach().view(1, S, S)


def _run(T: int = 100) -> TrainedModel:
    config = tiny_config()
    config.data.class_names = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
    config.model.num_classes = K
    config.diffusion.prediction = "eps"
    sched = NoiseSchedule.create("cosine", T)
    return TrainedModel(config, PointMasses(sched), sched, 0, torch.device("cpu"))


def _inputs(k: int = 2, seed: int = 3) -> torch.Tensor:
    """(k, 1, S, S) uint8 input images."""
    return torch.randint(0, 256, (k, 1, S, S), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


# image to image -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++2m"])
def test_strength_zero_returns_the_inputs(sampler: str) -> None:
    run, u8 = _run(), _inputs()
    seen = []
    out = run.edit(u8, "cat", n=3, strength=0.0, sampler=sampler, callback=lambda *a: seen.append(a))
    assert seen == []  # no step taken
    assert torch.equal(to_uint8(out.images), u8.repeat_interleave(3, dim=0))  # exact, after the range round trip


@pytest.mark.parametrize("kw", [dict(sampler="ddpm"), dict(sampler="ddim", steps=7), dict(sampler="dpm++2m-sde")])
def test_strength_one_is_plain_sampling_with_the_same_seed(kw) -> None:
    run = _run()
    edited = run.edit(_inputs(2), "cat", n=3, strength=1.0, seed=5, guidance=2.0, **kw).images
    plain = run.sample_prompts("cat", n=3, seed=5, guidance=2.0, **kw).images
    assert torch.equal(edited[:3], plain) and torch.equal(edited[3:], plain)  # every row, bitwise


@pytest.mark.parametrize("strength,steps", [(0.3, 10), (0.6, 50), (0.9, 20)])
def test_image_to_image_starts_from_q_xt_given_the_input(strength: float, steps: int) -> None:
    """DDIM from x_t = sqrt(ab_t) x_in + sqrt(1 - ab_t) z, t = t_{N-m}, m = round(strength N): with the point mass
    at c, every iterate is sqrt(ab_s) c + sqrt(1 - ab_s) e with e = (x_t - sqrt(ab_t) c) / sqrt(1 - ab_t)."""
    run, u8 = _run(), _inputs(1)
    sched, c = run.schedule, run.model.point(2)
    pairs = timestep_pairs(sched.num_steps, steps)
    m = round(strength * steps)
    t0 = pairs[steps - m][0]
    assert abs((t0 + 1) / sched.num_steps - strength) <= 1 / steps  # noised to about strength x T
    z = PerSampleNoise(4, [0]).randn((1, S, S)).double()  # the loop's first draw for image 0
    ab0 = sched.alpha_bar_of(t0)
    x_t = math.sqrt(ab0) * to_model_range(u8).double() + math.sqrt(1 - ab0) * z
    e = (x_t - math.sqrt(ab0) * c.double()) / math.sqrt(1 - ab0)
    seen = []
    out = run.edit(u8, "cat", n=1, strength=strength, sampler="ddim", steps=steps, seed=4, guidance=1.0,
                   callback=lambda t, x, x0: seen.append((t, x.double())))
    assert [t for t, _ in seen] == [t for t, _ in pairs[steps - m:]]
    for (t, x), (_, s) in zip(seen, pairs[steps - m:]):
        ab_s = sched.alpha_bar_of(s)
        torch.testing.assert_close(x, math.sqrt(ab_s) * c.double() + math.sqrt(1 - ab_s) * e, rtol=0, atol=1e-4)
    torch.testing.assert_close(out.images, c.expand(1, 1, S, S), rtol=0, atol=1e-4)


def test_edit_seeding_is_per_image_and_independent_of_batching() -> None:
    run, u8 = _run(), _inputs(3)
    whole = run.edit(u8, "dog", n=4, strength=0.5, seed=2, batch_size=64).images
    split = run.edit(u8, "dog", n=4, strength=0.5, seed=2, batch_size=5).images
    assert torch.equal(whole, split)
    one = run.edit(u8[1:2], "dog", n=4, strength=0.5, seed=2).images
    assert torch.equal(one, whole[4:8])  # row r image j: the input r, the noise of (seed, j)


def test_edit_reads_files_as_training_data_and_hashes_them(tmp_path) -> None:
    import hashlib

    run = _run()
    arr = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)  # RGB, portrait, not S
    Image.fromarray(arr).save(tmp_path / "in.png")
    from ddpm.data.transforms import DecodeSpec, decode_image

    with Image.open(tmp_path / "in.png") as im:
        expected = torch.from_numpy(decode_image(im, DecodeSpec(S, 1)).copy()).permute(2, 0, 1)
    out = run.edit(tmp_path / "in.png", "cat", n=2, strength=0.0)
    assert torch.equal(to_uint8(out.inputs), expected[None])
    assert out.input_sha256 == [hashlib.sha256((tmp_path / "in.png").read_bytes()).hexdigest()]


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan"), "0.5", True])
def test_strength_outside_zero_one_is_refused(strength) -> None:
    with pytest.raises(UserError, match="strength"):
        _run().edit(_inputs(1), "cat", strength=strength)


def test_unreadable_image_is_one_line(tmp_path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="cannot read image") as e:
        _run().edit(tmp_path / "bad.png", "cat")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="does not exist"):
        _run().edit(tmp_path / "missing.png", "cat")


# inpainting -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [dict(sampler="ddpm", jump=5, repeats=3), dict(sampler="ddim", steps=20, repeats=1),
                                dict(sampler="dpm++2m", steps=10, jump=2, repeats=2)])
def test_inpainting_keeps_known_pixels_exactly_and_fills_the_rest(kw) -> None:
    """The known pixels are the input's, bit for bit; with the exact eps of the point mass at c the generated ones
    are c (x0_hat = c at every step, whatever the known region holds)."""
    run, u8 = _run(), _inputs(1)
    generate = torch.zeros(S, S, dtype=torch.bool)
    generate[:, S // 2:] = True  # the right half
    out = run.inpaint(u8[0], generate, "cat", n=3, guidance=1.0, **kw)
    got = to_uint8(out.images)
    assert torch.equal(got[..., : S // 2], u8.expand(3, -1, -1, -1)[..., : S // 2])
    c = run.model.point(2)
    torch.testing.assert_close(out.images[..., S // 2:], c.expand(3, 1, S, S)[..., S // 2:], rtol=0, atol=1e-4)


def test_inpainting_with_a_mask_file_and_a_box_agree(tmp_path) -> None:
    run = _run()
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(tmp_path / "in.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 16:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    a = run.inpaint(tmp_path / "in.png", tmp_path / "mask.png", "dog", n=2, steps=10, repeats=2)
    b = run.inpaint(tmp_path / "in.png", box=(16, 0, 32, 32), prompt="dog", n=2, steps=10, repeats=2)
    assert torch.equal(a.mask, b.mask) and a.mask[..., 8:].all() and not a.mask[..., :8].any()
    assert torch.equal(a.images, b.images)
    assert (to_uint8(a.images)[..., :8] == 90).all()


def test_inpainting_bad_masks_are_one_line_errors(tmp_path) -> None:
    run = _run()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "in.png")
    Image.fromarray(np.zeros((32, 40), np.uint8)).save(tmp_path / "wrong.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "empty.png")
    for mask, match in [("wrong.png", "40x32 pixels but the image is 32x32"), ("empty.png", "marks nothing")]:
        with pytest.raises(UserError, match=match):
            run.inpaint(tmp_path / "in.png", tmp_path / mask, "cat")
    for box, match in [((0, 0, 33, 5), "not a rectangle inside"), ((4, 4, 4, 9), "not a rectangle"),
                       ((0, 0, 32, 32), "whole image")]:
        with pytest.raises(UserError, match=match):
            run.inpaint(tmp_path / "in.png", box=box, prompt="cat")
    with pytest.raises(UserError, match="jump"):
        run.inpaint(tmp_path / "in.png", box=(0, 0, 8, 8), jump=0)


@pytest.mark.parametrize("n,jump,repeats", [(10, 5, 1), (10, 5, 3), (50, 10, 10), (7, 3, 2), (4, 10, 5), (1, 1, 4)])
def test_resampling_plan(n: int, jump: int, repeats: int) -> None:
    pairs = timestep_pairs(1000, n)
    plan = resampling_plan(pairs, jump, repeats)
    assert denoising_steps(plan) == inpainting_steps(n, jump, repeats) == n + (repeats - 1) * jump * ((n - 1) // jump)
    assert plan[-1] == pairs[-1]  # ends with the clean sample
    assert [p for p in plan if p[1] < p[0]][:jump] == pairs[:jump]
    levels = [t for t, _ in pairs] + [-1]
    for (t, s), nxt in zip(plan, plan[1:]):
        assert nxt[0] == s  # a chain: each move starts where the last ended
        if s > t:  # a jump back up by `jump` levels
            assert levels.index(s) == levels.index(t) - jump
    if repeats == 1:
        assert plan == pairs


# interpolation --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["ddim", "dpm++2m"])
def test_interpolation_endpoints_are_the_two_samples(sampler: str) -> None:
    run = _run()
    morph = run.interpolate("cat", "dog", frames=5, sampler=sampler, steps=10, seed_a=3, seed_b=8)
    assert morph.positions == [0, 0.25, 0.5, 0.75, 1]
    assert torch.equal(morph.frames[0], run.sample(["cat"], n=1, sampler=sampler, steps=10, seed=3)[0])
    assert torch.equal(morph.frames[-1], run.sample(["dog"], n=1, sampler=sampler, steps=10, seed=8)[0])


def test_interpolation_lerps_the_condition_embedding() -> None:
    """At guidance 1 the point mass of the mixed embedding (1 - u) table_cat + u table_dog is drawn: frame u is
    that image, whatever the noise."""
    run = _run()
    morph = run.interpolate("cat", "dog", frames=4, steps=10, guidance=1.0)
    a, b = run.model.point(2), run.model.point(4)
    for u, frame in zip(morph.positions, morph.frames):
        torch.testing.assert_close(frame, torch.lerp(a, b, u), rtol=0, atol=1e-4)


def test_interpolation_slerps_the_starting_noise() -> None:
    run, shape = _run(), (1, S, S)
    za, zb = PerSampleNoise(1, [0]).randn(shape)[0], PerSampleNoise(2, [0]).randn(shape)[0]
    first = []
    run.interpolate("cat", frames=3, seed_a=1, seed_b=2, steps=10, guidance=1.0,
                    callback=lambda t, x, x0: first.append(x.clone()) if not first else None)
    # DDIM's first step from x_T with the exact eps: x_s = sqrt(ab_s) c + sqrt(1 - ab_s) e, e = (x_T - sqrt(ab_T) c) / ...
    sched, c = run.schedule, run.model.point(2).double()
    (t, s), = timestep_pairs(sched.num_steps, 10)[:1]
    x_T = torch.stack([slerp(za, zb, u) for u in (0, 0.5, 1)]).double()
    e = (x_T - math.sqrt(sched.alpha_bar_of(t)) * c) / math.sqrt(1 - sched.alpha_bar_of(t))
    expected = math.sqrt(sched.alpha_bar_of(s)) * c + math.sqrt(1 - sched.alpha_bar_of(s)) * e
    torch.testing.assert_close(first[0].double(), expected, rtol=0, atol=1e-4)


def test_slerp_closed_form() -> None:
    a, b = torch.zeros(2, 2), torch.zeros(2, 2)
    a[0, 0], b[0, 1] = 3.0, 3.0  # orthogonal, same norm: the quarter circle of radius 3
    for u in (0.0, 0.3, 0.5, 1.0):
        expected = torch.zeros(2, 2)
        expected[0, 0], expected[0, 1] = 3 * math.cos(u * math.pi / 2), 3 * math.sin(u * math.pi / 2)
        torch.testing.assert_close(slerp(a, b, u), expected, rtol=0, atol=1e-6)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    torch.testing.assert_close(slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel: the straight line


def test_interpolation_refuses_what_it_cannot_do() -> None:
    run = _run()
    for kw, match in [(dict(sampler="ddpm"), "deterministic sampler"), (dict(sampler="ddim", eta=0.5), "eta 0.5"),
                      (dict(frames=1), "frames"), (dict(end="cat"), "nothing to interpolate")]:
        with pytest.raises(UserError, match=match):
            run.interpolate("cat", **{"end": "dog", **kw})


def test_class_mixture_of_one_hot_is_the_table_row() -> None:
    w = class_mixture([2, K], K)
    assert w.shape == (2, K + 1) and torch.equal(w.sum(1), torch.ones(2)) and w[0, 2] == 1 and w[1, K] == 1
    assert frame_positions(3) == [0.0, 0.5, 1.0]


def test_image_to_image_plan_takes_the_last_steps() -> None:
    pairs = timestep_pairs(1000, 50)
    x0 = torch.zeros(1, 1, 2, 2)
    assert ImageToImage(x0, 0.0).plan(pairs) == []
    assert ImageToImage(x0, 1.0).plan(pairs) == pairs
    assert ImageToImage(x0, 0.6).plan(pairs) == pairs[20:]


class TextPoint(nn.Module):
    """The exact eps of a point mass at an image read off the text condition c (B, *shape): its first S x S
    numbers, so the point is linear in c, whatever the condition's shape."""

    def __init__(self, sched: NoiseSchedule) -> None:
        super().__init__()
        self.sched, self.null_id, self.shapes = sched, 0, []

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(c.shape[1:]))
        point = c.flatten(1)[:, : S * S].view(-1, 1, S, S)
        ab = self.sched.alpha_bar[t].view(-1, 1, 1, 1)
        return ((x.double() - ab.sqrt() * point.double()) / (1 - ab).sqrt()).to(x.dtype)


@pytest.mark.parametrize("shape", [(384,), (1 + 4, 384)])
def test_interpolation_lerps_a_text_condition_of_any_shape(shape, monkeypatch) -> None:
    """A text model's condition, (384,) or (1 + L, 384) tokens, is interpolated as the tensor it is: frame u draws
    the point of lerp(c_a, c_b, u), and the network sees the condition's own shape."""
    config = tiny_config()
    config.model.cond, config.diffusion.prediction = "text", "eps"
    sched = NoiseSchedule.create("cosine", 100)
    net = TextPoint(sched)
    run = TrainedModel(config, net, sched, 0, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    conds = {p: torch.rand(1, *shape, generator=gen) * 0.01 for p in ("a", "b")}
    for p in conds:
        conds[p].view(-1)[: S * S] = torch.rand(S * S, generator=gen) * 1.6 - 0.8
    monkeypatch.setattr(TrainedModel, "conditions",
                        lambda self, prompts, negative=None, strict=False: (conds[prompts[0]], [None], None, None))
    morph = run.interpolate("a", "b", frames=3, steps=8, guidance=1.0)
    points = {p: c.flatten()[: S * S].view(1, S, S) for p, c in conds.items()}
    for u, frame in zip(morph.positions, morph.frames):
        torch.testing.assert_close(frame, torch.lerp(points["a"], points["b"], u), rtol=0, atol=1e-4)
    assert set(net.shapes) == {shape}
