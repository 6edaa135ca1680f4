"""A trained VGG3 on the real Fashion-MNIST test set: integer argmax == PyTorch fake-quant
argmax on >= 99.9 % of the 10 000 images, logits within one step where every code agrees."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import build_model
from models.datasets import load_dataset
from simulator.importer import import_torch

FMNIST = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.dataset,
    pytest.mark.skipif(not os.path.exists(FMNIST), reason="Fashion-MNIST files not installed"),
]


def _train_vgg3(bits: int) -> torch.nn.Module:
    """A quick VGG3 (width 1/4): one epoch of Adam on 5000 training images."""
    torch.manual_seed(0)
    train = load_dataset("fashion-mnist", "train", limit=5000)
    model = build_model("vgg3", width=0.25, weight_bits=bits, mean=train.mean, std=train.std)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    images, labels = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for start in range(0, len(labels), 200):
            opt.zero_grad()
            loss = F.cross_entropy(model(images[start : start + 200]), labels[start : start + 200])
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.mark.parametrize("bits", [4])
def test_trained_vgg3_agrees_with_pytorch(bits):
    model = _train_vgg3(bits)
    test = load_dataset("fashion-mnist", "test")
    net = import_torch(model)
    x = net.quantize_input(test.images)
    logits = net.forward(x)
    with torch.no_grad():
        ref = torch.cat([model(torch.from_numpy(test.images[s : s + 2000]))
                         for s in range(0, 10000, 2000)]).numpy()  # fmt: skip
    same = np.mean(logits.argmax(1) == ref.argmax(1))
    assert same >= 0.999, same
    assert np.mean(logits.argmax(1) == test.labels) > 0.65  # it learned something
    # One step of the float logits: the last layer's accumulator step alpha_c; the integer
    # logits are on the finest of those grids. Images where every hidden code agrees
    # with torch land within a step; a rounding tie flipped upstream moves a few steps.
    last = net.ops[-1]
    alpha = np.abs(last.requant.mult / 2.0**last.requant.shift) * net.logit_scale
    diff = np.abs(logits * net.logit_scale - ref)
    within = np.all(diff <= alpha.max() * 1.01 + 1e-6, axis=1)
    assert np.mean(within) >= 0.9, np.mean(within)
    np.testing.assert_array_equal(logits[:500], net.reference_forward(x[:500]))
