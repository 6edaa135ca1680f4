"""Deployment of a network into one memory image: clean reads, known fault maps per encoding,
protection, biases, address stability."""

from __future__ import annotations

import numpy as np
import pytest

from memory_models import BitErrorModel, Chip, decode, encode, load_profile
from memory_models.usererror import UserInputError
from simulator.deployment import deploy

ENCODINGS = ["offset-binary", "twos-complement", "sign-magnitude"]


def _tiny_net(weight_bits: int = 4, seed: int = 0):
    import torch

    from models.zoo import build_model
    from simulator.importer import import_torch

    torch.manual_seed(seed)
    model = build_model("mlp", width=1 / 32, weight_bits=weight_bits, input_size=8)
    model.eval()
    return import_torch(model)


@pytest.fixture(scope="module")
def net():
    return _tiny_net()


@pytest.fixture(scope="module")
def x(net):
    images = np.random.default_rng(0).random((40, 1, 8, 8)).astype(np.float32)
    return net.quantize_input(images)


def _expected(values: np.ndarray, bits: int, enc: str, xor_mask) -> tuple[np.ndarray, np.ndarray]:
    """Naive: every code XOR its mask, decoded one by one; (changed flat idx, new values)."""
    flat = values.reshape(-1)
    idx, new = [], []
    for k, v in enumerate(flat):
        code = int(encode(np.array([v]), bits, enc)[0])
        m = xor_mask(k) if callable(xor_mask) else xor_mask
        w = int(decode(np.array([code ^ m]), bits, enc)[0])
        if w != int(v):
            idx.append(k)
            new.append(w)
    return np.array(idx, np.int64), np.array(new, np.int64)


def _bias32(values: np.ndarray, mask: int) -> np.ndarray:
    c = (values.astype(np.int64) & 0xFFFFFFFF) ^ mask
    return np.where(c >= 2**31, c - 2**32, c)


@pytest.mark.parametrize("enc", ENCODINGS)
def test_no_faults_gives_the_clean_network(net, x, enc):
    dep = deploy(net, encoding=enc, include_biases=True)
    bits = sum(w.size * net.weight_bits(n) for n, w in net.weights().items())
    bits += 32 * sum(b.size for b in net.biases().values())
    assert dep.n_bits >= bits
    r = dep.read(BitErrorModel(0.0, 0.0), np.random.default_rng(1))
    assert r.deltas == {} and r.bias_deltas == {}
    assert r.counts["flips"] == r.counts["changed_weights"] == r.counts["faults"] == 0
    np.testing.assert_array_equal(dep.corrupted_network(r).forward(x), net.forward(x))


@pytest.mark.parametrize("enc", ENCODINGS)
def test_every_bit_flipped_changes_exactly_the_expected_weights(net, enc):
    dep = deploy(net, encoding=enc, include_biases=True)
    r = dep.read(BitErrorModel(1.0, 1.0), np.random.default_rng(2))  # every cell flips
    n_changed = 0
    for name, w in net.weights().items():
        bits = net.weight_bits(name)
        idx, new = _expected(w, bits, enc, (1 << bits) - 1)
        got_idx, got_new = r.deltas[name]
        np.testing.assert_array_equal(got_idx, idx)
        np.testing.assert_array_equal(got_new, new)
        n_changed += idx.size
    for name, b in net.biases().items():
        got_idx, got_new = r.bias_deltas[name]
        np.testing.assert_array_equal(got_idx, np.arange(b.size))
        np.testing.assert_array_equal(got_new, -b.astype(np.int64) - 1)  # ~b
    assert r.counts["changed_weights"] == n_changed
    total = sum(w.size * net.weight_bits(n) for n, w in net.weights().items())
    total += 32 * sum(b.size for b in net.biases().values())
    assert r.counts["flips"] == r.counts["bit_errors"] == total


@pytest.mark.parametrize("enc", ENCODINGS)
@pytest.mark.parametrize(("p01", "p10", "sa0", "sa1"), [(1, 0, 0, 0), (0, 1, 0, 0),
                                                       (0, 0, 0, 1), (0, 0, 1, 0)])
def test_one_directional_and_stuck_faults(net, enc, p01, p10, sa0, sa1):
    """All cells read 1 (p01 = 1 or SA1) / all read 0 (p10 = 1 or SA0): known codes."""
    dep = deploy(net, encoding=enc)
    r = dep.read(BitErrorModel(p01, p10, sa0, sa1), np.random.default_rng(3))
    ones = p01 == 1 or sa1 == 1
    for name, w in net.weights().items():
        bits = net.weight_bits(name)
        full = (1 << bits) - 1
        target = int(decode(np.array([full if ones else 0]), bits, enc)[0])
        changed = np.flatnonzero(w.reshape(-1) != target)
        got_idx, got_new = r.deltas.get(name, (np.zeros(0, np.int64), np.zeros(0)))
        np.testing.assert_array_equal(got_idx, changed)
        assert np.all(got_new == target)


@pytest.mark.parametrize("enc", ENCODINGS)
def test_constructed_fault_map(net, enc):
    """A hand-made map of (tensor, weight, bit) flips fed to the decoder: exact deltas."""
    dep = deploy(net, encoding=enc, include_biases=True)
    rng = np.random.default_rng(4)
    changes, masks = {}, {}
    for name, w in net.weights().items():
        bits = net.weight_bits(name)
        k = np.unique(rng.integers(0, w.size, 25))
        m = rng.integers(1, 1 << bits, k.size)  # which bits flip in each chosen weight
        codes = encode(w.reshape(-1), bits, enc)
        changes[name] = (k.astype(np.int64), (codes[k] ^ m).astype(codes.dtype))
        masks[name] = dict(zip(k.tolist(), m.tolist()))
    r = dep.filter(changes)
    for name, w in net.weights().items():
        idx, new = _expected(w, net.weight_bits(name), enc, lambda k, mk=masks[name]: mk.get(k, 0))
        got = r.deltas.get(name, (np.zeros(0, np.int64), np.zeros(0, np.int64)))
        np.testing.assert_array_equal(got[0], idx)
        np.testing.assert_array_equal(got[1], new)
    assert r.bias_deltas == {}
    # a 32-bit bias: flip bit 3 of bias 0 (low half) and bit 30 of bias 2 (high half) and
    # bits 1 and 17 of bias 5 (both halves)
    (bname, b), = net.biases().items()
    region = "bias:" + bname
    c = b.astype(np.int64) & 0xFFFFFFFF
    halves = np.stack([c & 0xFFFF, c >> 16], axis=1).reshape(-1).astype(np.uint16)
    flips = {0: 1 << 3, 5: (1 << 14), 10: 1 << 1, 11: 1 << 1}  # split index -> xor mask
    idx = np.array(sorted(flips), np.int64)
    new = np.array([halves[i] ^ flips[i] for i in idx], np.uint16)
    r = dep.filter({region: (idx, new)})
    bidx, bnew = r.bias_deltas[bname]
    np.testing.assert_array_equal(bidx, [0, 2, 5])
    np.testing.assert_array_equal(bnew, [_bias32(b[0:1], 1 << 3)[0], _bias32(b[2:3], 1 << 30)[0],
                                         _bias32(b[5:6], (1 << 1) | (1 << 17))[0]])
    assert r.counts["flips"] == 4 and r.counts["changed_biases"] == 3


@pytest.mark.parametrize("enc", ENCODINGS)
def test_protected_layers_and_bits_never_change(net, enc):
    names = net.weight_names
    dep = deploy(net, encoding=enc, include_biases=True,
                 protect=["first", f"layer:{names[-1]}", "bit:msb"])
    assert dep.protected_layers == sorted([names[0], names[-1]])
    r = dep.read(BitErrorModel(1.0, 1.0), np.random.default_rng(5))
    assert set(r.deltas) == set(names[1:-1])
    assert r.bias_deltas == {}  # the only bias belongs to the last (protected) layer
    for name in names[1:-1]:
        bits = net.weight_bits(name)
        idx, new = _expected(net.weights()[name], bits, enc, (1 << bits) - 1 - (1 << (bits - 1)))
        np.testing.assert_array_equal(r.deltas[name][0], idx)
        np.testing.assert_array_equal(r.deltas[name][1], new)
    # bit:j at a random BER: those cells never differ from the stored bit
    dep = deploy(net, encoding=enc, protect="bit:0,bit:2")
    for seed in range(4):
        r = dep.read(BitErrorModel(0.3, 0.2), np.random.default_rng(seed))
        assert r.counts["bit_errors"] > r.counts["flips"] > 0
        for name, (idx, new) in r.deltas.items():
            bits = net.weight_bits(name)
            old = encode(net.weights()[name].reshape(-1)[idx], bits, enc).astype(np.int64)
            now = encode(new, bits, enc).astype(np.int64)
            assert not np.any((old ^ now) & 0b101)


def test_bias_deltas_match_the_full_forward(net, x):
    dep = deploy(net, include_biases=True)
    r = dep.read(BitErrorModel(0.05, 0.05), np.random.default_rng(6))
    assert r.bias_deltas and r.deltas
    session = net.session(x)
    full = dep.corrupted_network(r).forward(x)
    np.testing.assert_array_equal(session.logits({**r.deltas, **r.bias_deltas}), full)
    assert not np.array_equal(full, net.forward(x))


def test_sensitivity_filters_keep_one_layer_or_one_bit(net):
    dep = deploy(net, encoding="twos-complement")
    res = dep.image.read(BitErrorModel(0.1, 0.1), np.random.default_rng(7))
    full = dep.filter(res.changes)
    one = dep.filter(res.changes, only_layer=net.weight_names[1])
    assert set(one.deltas) == {net.weight_names[1]}
    np.testing.assert_array_equal(one.deltas[net.weight_names[1]][0],
                                  full.deltas[net.weight_names[1]][0])
    bit = dep.filter(res.changes, only_bit=3)
    for name, (idx, new) in bit.deltas.items():
        old = encode(net.weights()[name].reshape(-1)[idx], 4, "twos-complement")
        assert np.all((old ^ encode(new, 4, "twos-complement")) == 0b1000)
    assert dep.sensitivity_targets() == [("layer", n) for n in net.weight_names] + [
        ("bit", str(j)) for j in range(4)]
    # a read keeps its raw changes: filtering them again restricts that same read
    r = dep.read(BitErrorModel(0.1, 0.1), np.random.default_rng(7))
    assert r.deltas.keys() == full.deltas.keys()
    again = dep.filter(r.changes, only_bit=3)
    assert again.deltas.keys() == bit.deltas.keys()
    for name in bit.deltas:
        np.testing.assert_array_equal(again.deltas[name][0], bit.deltas[name][0])
        np.testing.assert_array_equal(again.deltas[name][1], bit.deltas[name][1])


def test_addresses_do_not_move_with_biases_or_protection(net):
    """Same chip, same rng: a weight reads the same with or without biases / protection."""
    prof = load_profile("sram-14nm")
    plain = deploy(net, profile=prof)
    with_b = deploy(net, profile=prof, include_biases=True)
    prot = deploy(net, profile=prof, include_biases=True, protect="first")
    chip = Chip(prof, with_b.n_bits, seed=11)
    reads = [d.read(chip, np.random.default_rng(8), knob=0.8) for d in (plain, with_b, prot)]
    assert reads[0].counts["changed_weights"] > 0
    for name in net.weight_names:
        np.testing.assert_array_equal(reads[0].deltas[name][0], reads[1].deltas[name][0])
    assert net.weight_names[0] not in reads[2].deltas
    for name in net.weight_names[1:]:
        np.testing.assert_array_equal(reads[1].deltas[name][1], reads[2].deltas[name][1])
    assert reads[2].bias_deltas.keys() == reads[1].bias_deltas.keys()


def test_binarized_weights_are_one_bit(x):
    bnet = _tiny_net(weight_bits=1)
    dep = deploy(bnet, encoding="twos-complement")  # 1-bit layers always use 1 = +1
    r = dep.read(BitErrorModel(1.0, 1.0), np.random.default_rng(9))
    for name, w in bnet.weights().items():
        if bnet.weight_bits(name) == 1:
            np.testing.assert_array_equal(r.deltas[name][1], -w.reshape(-1))


@pytest.mark.parametrize(("kw", "match"), [
    ({"protect": "layer:nope"}, "no layer named"),
    ({"protect": "bit:4"}, "more than 4 bits"),
    ({"protect": "bit:x"}, "bad bit position"),
    ({"protect": "middle"}, "unknown protection"),
    ({"encoding": "gray"}, "unknown weight encoding"),
    ({"layout": "diagonal"}, "unknown memory layout"),
])
def test_bad_deploy_arguments(net, kw, match):
    with pytest.raises(UserInputError, match=match):
        deploy(net, **kw)


def test_deploy_from_the_package_in_any_import_order(net):
    import simulator
    import simulator.deployment  # noqa: F401 - importing the module must not shadow the function
    from simulator import deploy as d

    dep = simulator.deploy(net, encoding="sign-magnitude")
    assert dep.n_bits > 0 and dep.encoding == "sign-magnitude"
    r = d(net).read(BitErrorModel(0.0, 0.0), np.random.default_rng(0))
    assert r.deltas == {}
