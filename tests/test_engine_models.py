"""Model-level: every zoo architecture (small widths), numba == numpy reference == ~torch;
corrupted weights, sessions with deltas, batch size and thread count independence."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch
from torch import nn

from models import build_model
from simulator.importer import import_torch
from simulator.network import IntegerNetwork
from simulator.ops import Linear, weight_range

ZOO = {
    "mlp": dict(width=0.125),
    "vgg3": dict(width=0.25),
    "vgg7": dict(width=0.0625, in_channels=3, input_size=16),
    "resnet18": dict(width=0.125, in_channels=3, input_size=16),
    "mobilenetv2": dict(width=0.25, in_channels=3, input_size=16, mean=[0.4, 0.5, 0.6],
                        std=[0.2, 0.25, 0.3]),
}  # fmt: skip


def _randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Give BatchNorm non-trivial statistics, some negative gammas, a non-unit logit scale."""
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm1d | nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
            mod.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
            mod.weight.data.copy_(torch.rand(c, generator=gen) * 3 - 1)
            mod.bias.data.copy_((torch.rand(c, generator=gen) - 0.5) * 0.6)
        if hasattr(mod, "log_scale"):
            mod.log_scale.data.fill_(0.7)


def make_model(arch: str, seed: int = 0, **extra) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(arch, **{**ZOO[arch], **extra})
    _randomize_bn(model, torch.Generator().manual_seed(seed))
    return model.eval()


def _images(model, n: int, seed: int = 1) -> np.ndarray:
    cfg = model.mcelsim_config
    rng = np.random.default_rng(seed)
    shape = (n, cfg["in_channels"], cfg["input_size"], cfg["input_size"])
    return rng.random(shape, dtype=np.float32)


def corrupt(net: IntegerNetwork, frac: float, seed: int) -> dict[str, np.ndarray]:
    """Random codes anywhere in each layer's b-bit range (including -2^(b-1))."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, w in net.weights().items():
        lo, hi = weight_range(net.weight_bits(name))
        w = w.copy()
        hit = rng.random(w.shape) < frac
        if lo == -1 and hi == 1:
            w[hit] = -w[hit]
        else:
            w[hit] = rng.integers(lo, hi + 1, int(hit.sum()))
            w.reshape(-1)[0] = lo  # the most negative code always appears
        out[name] = w
    return out


@pytest.fixture(scope="module", params=sorted(ZOO))
def zoo_case(request):
    arch = request.param
    model = make_model(arch)
    net = import_torch(model)
    images = _images(model, 12)
    return arch, model, net, images


def _assert_numba_equals_reference_and_close_to_torch(model, net, images) -> None:
    x = net.quantize_input(images)
    logits = net.forward(x)
    assert logits.dtype == np.int32 and logits.shape == (len(images), net.num_classes)
    np.testing.assert_array_equal(logits, net.reference_forward(x))
    with torch.no_grad():
        ref = model(torch.from_numpy(images)).numpy()
    assert np.mean(logits.argmax(1) == ref.argmax(1)) >= 10 / 12
    # float logits: within a small fraction of their range (activation rounding may differ)
    assert np.max(np.abs(logits * net.logit_scale - ref)) <= 0.05 * np.max(np.abs(ref)) + 1e-6


def test_numba_equals_reference_and_close_to_torch(zoo_case):
    _, model, net, images = zoo_case
    _assert_numba_equals_reference_and_close_to_torch(model, net, images)


def test_corrupted_weights_numba_equals_reference(zoo_case):
    _, _, net, images = zoo_case
    x = net.quantize_input(images)
    bad = net.with_weights(corrupt(net, 0.05, seed=3))
    logits = bad.forward(x)
    np.testing.assert_array_equal(logits, bad.reference_forward(x))
    assert not np.array_equal(logits, net.forward(x))


def test_batch_size_and_thread_count_do_not_change_results(zoo_case):
    _, _, net, images = zoo_case
    x = net.quantize_input(images)
    full = net.forward(x)
    np.testing.assert_array_equal(net.forward(x, batch_size=5), full)
    np.testing.assert_array_equal(net.forward(x[7:]), full[7:])
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        np.testing.assert_array_equal(net.forward(x, batch_size=4), full)
    finally:
        numba.set_num_threads(old)


def test_session_deltas_equal_full_forward(zoo_case):
    _, _, net, images = zoo_case
    x = net.quantize_input(images)
    session = net.session(x, batch_size=5)
    np.testing.assert_array_equal(session.clean_logits, net.forward(x))
    assert session.nbytes > 0
    rng = np.random.default_rng(11)
    names = net.weight_names
    cases = [
        {names[0]: 1},  # first layer only
        {names[-1]: 2},  # last layer only
        {names[len(names) // 2]: 3, names[-2]: 2},
        {n: 2 for n in names},  # everything, several channels each
    ]
    for case in cases:
        deltas, applied = {}, {}
        for name, k in case.items():
            w = net.weights()[name]
            lo, hi = weight_range(net.weight_bits(name))
            idx = rng.choice(w.size, size=min(k, w.size), replace=False).astype(np.int64)
            if (lo, hi) == (-1, 1):
                vals = -w.reshape(-1)[idx]
            else:
                vals = rng.integers(lo, hi + 1, idx.size)
            deltas[name] = (idx, vals)
            new = w.copy()
            new.reshape(-1)[idx] = vals
            applied[name] = new
        want = net.with_weights(applied).forward(x)
        for mode in ("auto", "patch", "reuse"):
            np.testing.assert_array_equal(session.logits(deltas, mode=mode), want)
    assert np.array_equal(session.logits({}), session.clean_logits)
    assert np.array_equal(session.logits({}, mode="reuse"), session.clean_logits)
    # biases take deltas too
    if net.biases():
        bname, b = next(iter(net.biases().items()))
        new_b = b.copy()
        new_b[0] += 2**20
        want = net.with_weights({}, {bname: new_b}).forward(x)
        for mode in ("patch", "reuse"):
            got = session.logits({bname: (np.array([0]), np.array([new_b[0]]))}, mode=mode)
            np.testing.assert_array_equal(got, want)


def test_weight_api_matches_torch_codes():
    model = make_model("vgg3", weight_bits=4)
    net = import_torch(model, meta={"note": "x"})
    assert net.meta["note"] == "x"
    layers = [m for m in model.modules() if hasattr(m, "weight_codes")]
    assert len(net.weight_names) == len(layers)
    for name, mod in zip(net.weight_names, layers, strict=True):
        q, _ = mod.weight_codes()
        np.testing.assert_array_equal(net.weights()[name], q.numpy())
        assert net.weight_bits(name) == 4
        assert net.weights()[name].dtype == np.int8
    assert net.num_classes == 10 and net.logit_scale > 0
    biases = net.biases()
    assert all(b.dtype == np.int32 for b in biases.values()) and len(biases) == 1


def test_with_weights_validates():
    net = import_torch(make_model("mlp", weight_bits=4))
    name = net.weight_names[0]
    w = net.weights()[name]
    ok = np.full_like(w, -8)  # -2^(b-1) is storable even though training never makes it
    net.with_weights({name: ok})
    with pytest.raises(ValueError, match="range"):
        net.with_weights({name: np.full_like(w, 8)})
    with pytest.raises(ValueError, match="shape"):
        net.with_weights({name: w[:1]})
    with pytest.raises(ValueError, match="unknown"):
        net.with_weights({"nope": w})
    with pytest.raises(ValueError):
        net.weights()[name][0, 0] = 1  # read-only: use with_weights
    bnet = import_torch(make_model("mlp", weight_bits=1))
    with pytest.raises(ValueError, match="-1 or \\+1"):
        bnet.with_weights({name: np.zeros_like(bnet.weights()[name])})


def test_binarized_network_uses_xnor_popcount():
    model = make_model("vgg3", weight_bits=1, act_bits=1)
    net = import_torch(model)
    xnor = [op for op in net.ops if isinstance(op, Linear) and op.xnor]
    assert len(xnor) == 2  # both linear layers see ±1 inputs and ±1 weights
    images = _images(model, 10)
    x = net.quantize_input(images)
    logits = net.forward(x)
    np.testing.assert_array_equal(logits, net.reference_forward(x))
    with torch.no_grad():
        ref = model(torch.from_numpy(images)).numpy()
    assert np.mean(logits.argmax(1) == ref.argmax(1)) >= 0.8
    bad = net.with_weights(corrupt(net, 0.1, seed=5))
    np.testing.assert_array_equal(bad.forward(x), bad.reference_forward(x))
    session = net.session(x)
    name = net.weight_names[2]
    idx = np.array([0, 5, 17])
    vals = -net.weights()[name].reshape(-1)[idx]
    new = net.weights()[name].copy()
    new.reshape(-1)[idx] = vals
    np.testing.assert_array_equal(
        session.logits({name: (idx, vals)}), net.with_weights({name: new}).forward(x)
    )


def test_forward_rejects_float_input():
    net = import_torch(make_model("mlp"))
    with pytest.raises(ValueError, match="quantize_input"):
        net.forward(np.zeros((1, 1, 28, 28), np.float32))


def test_model_without_logit_scale_imports_and_matches_torch():
    model = make_model("vgg3", logit_scale=False)
    assert model.mcelsim_config["logit_scale"] is False
    assert not any(hasattr(m, "log_scale") for m in model.modules())
    _assert_numba_equals_reference_and_close_to_torch(model, import_torch(model),
                                                      _images(model, 12))
