"""Losses against independent numpy formulas (docs/mcel.md), gradients, limiting cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from models.losses import ce_loss, make_loss, mcel_loss, mean_logit_margin, mhl_loss

pytestmark = pytest.mark.usefixtures("torch_one_thread")



def _mcel_numpy(y: np.ndarray, t: np.ndarray, m: float, L: float) -> float:
    """-log(e^{z_i - m} / (e^{z_i - m} + sum_{k != i} e^{z_k})), z = L tanh(y / L); batch mean."""
    out = []
    for row, i in zip(y.astype(np.float64), t):
        z = L * np.tanh(row / L)
        num = z[i] - m
        others = np.delete(z, i)
        top = max(num, others.max())
        denom = np.exp(num - top) + np.exp(others - top).sum()
        out.append(-(num - top - np.log(denom)))
    return float(np.mean(out))


@pytest.mark.parametrize("m, L", [(32.0, 100.0), (0.0, 100.0), (4.0, 10.0), (128.0, 100.0)])
def test_mcel_matches_independent_formula(m, L):
    rng = np.random.default_rng(0)
    y = rng.normal(0, 40, size=(64, 10))
    t = rng.integers(0, 10, size=64)
    got = mcel_loss(torch.tensor(y), torch.tensor(t), margin=m, L=L)
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(_mcel_numpy(y, t, m, L), rel=1e-10, abs=1e-10)


def test_mcel_gradcheck_double():
    torch.manual_seed(0)
    y = (torch.randn(6, 5, dtype=torch.float64) * 30).requires_grad_()
    t = torch.randint(0, 5, (6,))
    assert torch.autograd.gradcheck(lambda v: mcel_loss(v, t, margin=8.0, L=50.0), (y,))


def test_mcel_zero_margin_large_bound_is_cross_entropy():
    torch.manual_seed(1)
    y = torch.randn(32, 10, dtype=torch.float64) * 5
    t = torch.randint(0, 10, (32,))
    a = mcel_loss(y, t, margin=0.0, L=1e7)
    torch.testing.assert_close(a, F.cross_entropy(y, t), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ce_loss(y, t), F.cross_entropy(y, t))


def test_mcel_margin_only_on_target_and_bounded_logits():
    y = torch.tensor([[1000.0, -1000.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([0])
    # logits clamp to (-L, L): a huge logit cannot buy more than L
    assert float(mcel_loss(y, t, margin=0.0, L=5.0)) > 1e-3
    # a margin makes a correct but close prediction costly
    close = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    assert float(mcel_loss(close, t, margin=10.0)) > float(mcel_loss(close, t, margin=0.0))


def test_mhl_matches_formula():
    rng = np.random.default_rng(2)
    y = rng.normal(0, 100, size=(16, 10))
    t = rng.integers(0, 10, size=16)
    tt = -np.ones_like(y)
    tt[np.arange(16), t] = 1
    ref = np.mean(np.maximum(0, 128.0 - tt * y) / 128.0)
    got = mhl_loss(torch.tensor(y), torch.tensor(t), b=128.0)
    assert float(got) == pytest.approx(ref, rel=1e-12)


def test_mean_logit_margin():
    y = torch.tensor([[3.0, 1.0, 2.5], [0.0, -1.0, 4.0]])
    assert float(mean_logit_margin(y)) == pytest.approx((0.5 + 4.0) / 2)


def test_make_loss_and_bad_arguments():
    y, t = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    assert float(make_loss("mcel", margin=2.0, L=10.0)(y, t)) == float(mcel_loss(y, t, 2.0, 10.0))
    assert float(make_loss("mhl", mhl_b=4.0)(y, t)) == float(mhl_loss(y, t, 4.0))
    with pytest.raises(ValueError):
        make_loss("hinge")
    with pytest.raises(ValueError):
        mcel_loss(y, t, L=0.0)
    with pytest.raises(ValueError):
        mcel_loss(y, t[:2])
