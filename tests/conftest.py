"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch thread per test process (pytest-xdist already runs one process per core)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A 4-bit MLP (width 1/32) checkpoint naming the synthetic dataset, as a path."""
    import torch

    from models.checkpoint import save_checkpoint
    from models.zoo import build_model

    torch.manual_seed(0)
    model = build_model("mlp", width=1 / 32, weight_bits=4).eval()
    path = tmp_path_factory.mktemp("tiny") / "tiny.ckpt"
    save_checkpoint(path, model, {"dataset": {"name": "synthetic"}, "loss": "ce"})
    return path
