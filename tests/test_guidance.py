"""Classifier-free guidance: condition dropout during training and the guided eps at sampling time."""

from __future__ import annotations

import math

import pytest
import torch

from ddpm.diffusion.guidance import drop_condition, guided_eps

NULL = 7


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_rate_is_about_p(p: float) -> None:
    n = 40000
    cond = torch.arange(n) % NULL  # never equal to NULL beforehand
    out = drop_condition(cond, NULL, p, generator=torch.Generator().manual_seed(0))
    assert out.shape == cond.shape and out.dtype == cond.dtype
    dropped = out == NULL
    rate = dropped.double().mean().item()
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / n), rate
    assert torch.equal(out[~dropped], cond[~dropped])  # kept entries are untouched
    assert torch.equal(cond, torch.arange(n) % NULL)  # the input is not modified in place


def test_drop_is_reproducible_with_generator_and_varies_with_seed() -> None:
    cond = torch.zeros(256, dtype=torch.long)
    a = drop_condition(cond, NULL, 0.3, generator=torch.Generator().manual_seed(1))
    b = drop_condition(cond, NULL, 0.3, generator=torch.Generator().manual_seed(1))
    c = drop_condition(cond, NULL, 0.3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_drop_p0_is_identity_and_p1_drops_all() -> None:
    cond = torch.tensor([0, 3, 5, 1, 2])
    assert torch.equal(drop_condition(cond, NULL, 0.0), cond)
    assert torch.equal(drop_condition(cond, NULL, 1.0), torch.full_like(cond, NULL))


class CountingModel:
    """eps depends on x, t and the class; records every call's inputs."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.clone(), t.clone(), c.clone()))
        cf = c.to(x.dtype).view(-1, 1, 1, 1)
        tf = t.to(x.dtype).view(-1, 1, 1, 1)
        return x * (1 + 0.5 * cf) + 0.01 * tf - 0.3 * cf**2


def _inputs():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 4, 4, generator=gen)
    t = torch.tensor([5, 17, 99])
    cond = torch.tensor([0, 2, 4])
    return x, t, cond


def _branches(x, t, cond):
    m = CountingModel()
    return m(x, t, cond), m(x, t, torch.full_like(cond, NULL))


def test_w0_is_unconditional_in_one_call() -> None:
    x, t, cond = _inputs()
    eps_c, eps_u = _branches(x, t, cond)
    m = CountingModel()
    out = guided_eps(m, x, t, cond, NULL, 0.0)
    torch.testing.assert_close(out, eps_u, rtol=0, atol=0)
    assert len(m.calls) == 1 and m.calls[0][0].shape[0] == 3
    assert (m.calls[0][2] == NULL).all()
    assert not torch.allclose(eps_c, eps_u)  # the class matters, so the test can tell the branches apart


def test_w1_is_conditional_in_one_call() -> None:
    x, t, cond = _inputs()
    eps_c, _ = _branches(x, t, cond)
    m = CountingModel()
    out = guided_eps(m, x, t, cond, NULL, 1.0)
    torch.testing.assert_close(out, eps_c, rtol=0, atol=0)
    assert len(m.calls) == 1 and m.calls[0][0].shape[0] == 3
    assert torch.equal(m.calls[0][2], cond)


@pytest.mark.parametrize("w", [3.0, 0.5, -1.0, 7.5])
def test_guided_combination_in_one_batched_call(w: float) -> None:
    x, t, cond = _inputs()
    eps_c, eps_u = _branches(x, t, cond)
    m = CountingModel()
    out = guided_eps(m, x, t, cond, NULL, w)
    torch.testing.assert_close(out, eps_u + w * (eps_c - eps_u), rtol=1e-5, atol=1e-5)
    assert out.shape == x.shape
    assert len(m.calls) == 1
    cx, ct, cc = m.calls[0]
    assert cx.shape[0] == 2 * x.shape[0]
    assert torch.equal(cx, torch.cat([x, x]))
    assert torch.equal(ct, torch.cat([t, t]))
    assert sorted(cc.tolist()) == sorted(cond.tolist() + [NULL] * 3)
    # each x row is paired with its own t and with either its class or the null id
    for j in range(6):
        i = j % 3
        assert torch.equal(cx[j], x[i]) and ct[j] == t[i] and cc[j].item() in (cond[i].item(), NULL)


def test_w3_explicit_closed_form() -> None:
    x, t, cond = _inputs()
    eps_c, eps_u = _branches(x, t, cond)
    out = guided_eps(CountingModel(), x, t, cond, NULL, 3.0)
    torch.testing.assert_close(out, 3.0 * eps_c - 2.0 * eps_u, rtol=1e-5, atol=1e-5)
