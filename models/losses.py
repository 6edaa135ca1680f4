"""Training losses: cross-entropy, MCEL (margin cross-entropy on clamped logits), margin hinge.

All take raw logits [N, K] (float) and integer targets [N] and return the mean over the
batch. See /docs/mcel.md for the formulas and their sources.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["ce_loss", "mcel_loss", "mhl_loss", "mean_logit_margin", "LOSSES", "make_loss"]

LOSSES = ("ce", "mcel", "mhl")


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.dim() != 2 or target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"need logits [N, K] and target [N], got {tuple(logits.shape)} and "
            f"{tuple(target.shape)}"
        )


def ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Standard cross-entropy, mean over the batch."""
    _check(logits, target)
    return F.cross_entropy(logits, target)


def mcel_loss(
    logits: torch.Tensor, target: torch.Tensor, margin: float = 32.0, L: float = 100.0
) -> torch.Tensor:
    """MCEL: cross-entropy of z = L * tanh(y / L) with `margin` subtracted from the target logit.

    -log(e^{z_i - m} / (e^{z_i - m} + sum_{k != i} e^{z_k})), mean over the batch. `L` > 0
    bounds the logits to (-L, L) (in logit units); margin m >= 0 acts only in the loss.
    """
    _check(logits, target)
    if not L > 0:
        raise ValueError(f"logit bound L must be > 0, got {L}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    z = L * torch.tanh(logits / L)
    z = z - margin * F.one_hot(target, logits.shape[1]).to(z.dtype)
    return F.cross_entropy(z, target)


def mhl_loss(logits: torch.Tensor, target: torch.Tensor, b: float = 128.0) -> torch.Tensor:
    """Margin hinge loss (Buschjaeger et al. 2021): mean_k max(0, b - t_k y_k) / b, t = +-1 one-hot.

    Mean over classes and batch.
    """
    _check(logits, target)
    if not b > 0:
        raise ValueError(f"hinge margin b must be > 0, got {b}")
    t = 2.0 * F.one_hot(target, logits.shape[1]).to(logits.dtype) - 1.0
    return torch.clamp(b - t * logits, min=0.0).mean() / b


def mean_logit_margin(logits: torch.Tensor) -> torch.Tensor:
    """Mean over samples of (top logit - second logit), a 0-d tensor in logit units."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"need logits [N, K >= 2], got {tuple(logits.shape)}")
    top2 = torch.topk(logits, 2, dim=1).values
    return (top2[:, 0] - top2[:, 1]).mean()


def make_loss(name: str, margin: float = 32.0, L: float = 100.0, mhl_b: float = 128.0):
    """fn(logits, target) -> loss for `name` in LOSSES, with its parameters bound."""
    if name == "ce":
        return ce_loss
    if name == "mcel":
        return lambda y, t: mcel_loss(y, t, margin=margin, L=L)
    if name == "mhl":
        return lambda y, t: mhl_loss(y, t, b=mhl_b)
    raise ValueError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}")
