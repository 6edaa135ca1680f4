"""ONNX QDQ import against onnxruntime, an oracle no one here wrote, and PTQ of a float VGG3.

Rounding on each side: ONNX QuantizeLinear (onnxruntime's float path and its MLAS
requantization) rounds half to even; mcelsim imports ONNX graphs with half-even ties
(`rounding="half-even"`). Where they still differ: onnxruntime computes a float Conv /
MatMul on dequantized values (float32 sums), or in its integer QLinearConv / QGemm
requantizes with a float32 multiplier and a float32 product; mcelsim computes exact
integers with a >= 30-bit integer multiplier. Values within float32 precision of a
rounding boundary can then land one code apart, and such a flip moves later layers.
onnxruntime's extended optimizations replace a MatMul on int8 weights whose codes fit 4
bits by MatMulNBits, which re-quantizes activations on the fly (not exact): zoo exports
are therefore compared at ORT_ENABLE_BASIC, PTQ exports (int32 biases, fused into
QLinearConv / QGemm) at the default level.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from byo_oracle import compare
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from memory_models.usererror import UserInputError
from models import build_model
from models.onnx_export import export_onnx, quantize_biases
from simulator import import_onnx
from simulator.cli import main
from simulator.ptq import quantize_model

FMNIST = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
needs_fmnist = [
    pytest.mark.slow,
    pytest.mark.dataset,
    pytest.mark.skipif(not os.path.exists(FMNIST), reason="Fashion-MNIST files not installed"),
]


def _train(model, n, seed=0):
    """One epoch of Adam on the first n Fashion-MNIST training images (2 torch threads)."""
    from models.datasets import load_dataset

    torch.manual_seed(seed)
    train = load_dataset("fashion-mnist", "train", limit=n)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    images, labels = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model.train()
        for s in range(0, n, 200):
            opt.zero_grad()
            F.cross_entropy(model(images[s : s + 200]), labels[s : s + 200]).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _test_images(limit=None):
    from models.datasets import load_dataset

    return load_dataset("fashion-mnist", "test", limit=limit)


def _zoo(arch, width, n):
    from models.datasets import load_dataset

    torch.manual_seed(0)
    train = load_dataset("fashion-mnist", "train", limit=10)
    model = build_model(arch, width=width, weight_bits=4, mean=train.mean, std=train.std)
    return _train(model, n)


@pytest.mark.parametrize("arch, width, n_train, n_test", [("vgg3", 0.25, 5000, 2000),
                                                          ("resnet18", 0.125, 2000, 1000)])
@pytest.mark.usefixtures("torch_one_thread")
@pytest.mark.slow
@pytest.mark.dataset
@pytest.mark.skipif(not os.path.exists(FMNIST), reason="Fashion-MNIST files not installed")
def test_zoo_model_exported_to_onnx_agrees_with_onnxruntime(tmp_path, arch, width, n_train,
                                                            n_test):  # fmt: skip
    path = tmp_path / f"{arch}.onnx"
    export_onnx(_zoo(arch, width, n_train), path, (1, 28, 28))
    net = import_onnx(path)
    test = _test_images(n_test)
    r = compare(net, path, test.images, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    assert r["argmax"] >= 0.999, r
    assert r["codes_equal"][0] == 1.0  # the input quantizer: same float32 arithmetic
    assert r["codes_max_diff"][1] <= 1, r  # the first layer: at most one code, at ties
    # flips at float32 ties in onnxruntime propagate through ResNet-18's 8 blocks
    assert min(r["codes_equal"]) >= (0.99 if arch == "vgg3" else 0.85), r
    if arch == "vgg3":
        assert max(r["codes_max_diff"]) <= 1, r
    # every layer on onnxruntime's own input codes: within one code (float32 vs exact
    # requantization at near-ties), and almost always equal
    assert max(r["layer_codes_max_diff"]) <= 1, r
    assert min(r["layer_codes_equal"]) >= 0.999, r
    assert np.mean(net.forward(net.quantize_input(test.images)).argmax(1) == test.labels) > 0.5


class FloatVGG3(nn.Module):
    """A float VGG3 the usual way (conv, BatchNorm, ReLU, max pooling), no quantization."""

    def __init__(self, width=16, hidden=256):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(width * 49, hidden), nn.ReLU(),
                                        nn.Linear(hidden, 10))  # fmt: skip

    def forward(self, x):  # noqa: D102
        return self.classifier(self.features(x))


@pytest.mark.usefixtures("torch_one_thread")
@pytest.mark.slow
@pytest.mark.dataset
@pytest.mark.skipif(not os.path.exists(FMNIST), reason="Fashion-MNIST files not installed")
def test_ptq_of_float_vgg3_and_onnxruntime_integer_kernels(tmp_path):
    from models.datasets import load_dataset

    torch.manual_seed(0)
    model = _train(FloatVGG3(), 5000)
    calib = load_dataset("fashion-mnist", "train", limit=1000).images
    qmodel = quantize_model(model, calib, weight_bits=4, act_bits=8)
    test = _test_images(3000)
    net = import_onnx_free(qmodel)
    logits = net.forward(net.quantize_input(test.images))
    with torch.no_grad():
        fq = qmodel(torch.from_numpy(test.images)).numpy()
    acc_int = np.mean(logits.argmax(1) == test.labels)
    acc_fq = np.mean(fq.argmax(1) == test.labels)
    assert abs(acc_int - acc_fq) <= 0.01 and acc_int > 0.7, (acc_int, acc_fq)
    # the same PTQ network through ONNX: onnxruntime fuses it into QLinearConv / QGemm
    path = tmp_path / "vgg3-ptq.onnx"
    export_onnx(qmodel, path, (1, 28, 28))
    assert quantize_biases(path) >= 3  # both convs and the Gemm(s) with a bias
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
    assert {"QLinearConv", "QGemm"} <= ops  # onnxruntime's own integer kernels
    from_onnx = import_onnx(path)
    np.testing.assert_array_equal(from_onnx.forward(from_onnx.quantize_input(test.images[:500])),
                                  logits[:500])  # fmt: skip
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ort_logits = sess.run(None, {"images": test.images})[0]
    assert np.mean(ort_logits.argmax(1) == logits.argmax(1)) >= 0.999


def import_onnx_free(qmodel):
    """The PTQ network imported directly (no ONNX file)."""
    from simulator.importer import import_torch

    return import_torch(qmodel, meta={"input_shape": qmodel.graph["input_shape"]})


def _handmade(path, in_zp=128, mid_zp=3, mid_type=TensorProto.UINT8):
    """images -> Q(uint8, zp) -> DQ -> Conv(int8 weights) -> Relu -> Q(zp) -> DQ -> Flatten ->
    Gemm(int8 weights, bias) -> logits: zero points on both activations."""
    rng = np.random.default_rng(0)
    w1 = rng.integers(-7, 8, (4, 1, 3, 3)).astype(np.int8)
    w2 = rng.integers(-7, 8, (10, 4 * 6 * 6)).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.array(1 / 255, np.float32), "s_in"),
        numpy_helper.from_array(np.array(in_zp, np.uint8), "z_in"),
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(np.array([0.05, 0.1, 0.02, 0.07], np.float32), "s_w1"),
        numpy_helper.from_array(np.array(0.013, np.float32), "s_mid"),
        numpy_helper.from_array(np.array(mid_zp, np.uint8 if mid_type == TensorProto.UINT8
                                         else np.int8), "z_mid"),  # fmt: skip
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(np.array(0.03, np.float32), "s_w2"),
        numpy_helper.from_array(rng.normal(0, 0.1, 10).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["images", "s_in", "z_in"], ["q0"]),
        helper.make_node("DequantizeLinear", ["q0", "s_in", "z_in"], ["x0"]),
        helper.make_node("DequantizeLinear", ["w1", "s_w1"], ["wd1"], axis=0),
        helper.make_node("Conv", ["x0", "wd1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1],
                         name="conv1"),  # fmt: skip
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("QuantizeLinear", ["r1", "s_mid", "z_mid"], ["q1"]),
        helper.make_node("DequantizeLinear", ["q1", "s_mid", "z_mid"], ["x1"]),
        helper.make_node("Flatten", ["x1"], ["f1"]),
        helper.make_node("DequantizeLinear", ["w2", "s_w2"], ["wd2"]),
        helper.make_node("Gemm", ["f1", "wd2", "b2"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "handmade",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 1, 12, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, str(path))


@pytest.mark.parametrize("in_zp, mid_zp, mid_type", [(128, 3, TensorProto.UINT8),
                                                     (0, 0, TensorProto.UINT8),
                                                     (17, -100, TensorProto.INT8)])
def test_int8_uint8_zero_points_are_exact(tmp_path, in_zp, mid_zp, mid_type):
    path = tmp_path / "zp.onnx"
    _handmade(path, in_zp, mid_zp, mid_type)
    net = import_onnx(path)
    x = np.random.default_rng(1).random((300, 1, 12, 12), dtype=np.float32)
    x[:10] = np.round(x[:10] * 255) / 255 + 0.5 / 255  # exact ties of the input quantizer
    r = compare(net, path, x)
    assert r["codes_equal"] == [1.0, 1.0], r
    assert r["argmax"] == 1.0 and r["logits_within_step"] >= 0.99, r
    assert net.input_spec.qmin == -in_zp and net.input_spec.qmax == 255 - in_zp


def test_unsupported_op_and_bad_files_exit_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "sig.onnx"
    _handmade(path)
    model = onnx.load(str(path))
    model.graph.node[4].op_type = "Sigmoid"
    model.graph.node[4].name = "act1"
    onnx.save(model, str(path))
    with pytest.raises(UserInputError, match=r"node act1 \(Sigmoid\).*unsupported op Sigmoid.*"
                       r"QuantizeLinear, DequantizeLinear"):  # fmt: skip
        import_onnx(path)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not an onnx model at all" * 10)
    zp_weights = tmp_path / "zpw.onnx"
    _handmade(zp_weights)
    model = onnx.load(str(zp_weights))
    model.graph.initializer.append(numpy_helper.from_array(np.int8(3), "z_w"))
    model.graph.node[2].input.append("z_w")
    onnx.save(model, str(zp_weights))
    for bad, needle in [(path, "Sigmoid"), (garbage, "not a valid ONNX model"),
                        (zp_weights, "non-zero zero point"),
                        (tmp_path / "none.onnx", "not found")]:  # fmt: skip
        rc = main(["simulate", str(bad), "--ber", "0.01", "--dataset", "synthetic", "--limit",
                   "8", "--out", str(tmp_path / "r.db"), "--quiet"])  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and needle in err[0], (bad, err)


def test_simulate_and_quantize_take_an_onnx_file(tmp_path, capsys):
    import json

    path = tmp_path / "m.onnx"
    torch.manual_seed(0)
    zoo = build_model("vgg3", width=0.125, weight_bits=4).eval()
    export_onnx(zoo, path, (1, 28, 28))
    db = tmp_path / "r.db"
    assert main(["simulate", str(path), "--ber", "0:0.01:0.01", "--dataset", "synthetic",
                 "--limit", "40", "--chips", "2", "--workers", "1", "--quiet", "--out", str(db),
                 "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc["models"][0]["label"] == "m" and len(doc["summary"]) == 2
    ckpt = tmp_path / "m.ckpt"
    assert main(["quantize", "--onnx", str(path), "--dataset", "synthetic", "--out", str(ckpt),
                 "--json"]) == 0  # fmt: skip
    rows = json.loads(capsys.readouterr().out)["layers"]
    assert [r["weight_bits"] for r in rows] == [4, 4, 4, 4]
    from simulator.importer import import_checkpoint

    x = import_onnx(path).quantize_input(np.random.default_rng(0).random((20, 1, 28, 28),
                                                                         dtype=np.float32))
    np.testing.assert_array_equal(import_checkpoint(ckpt).forward(x), import_onnx(path).forward(x))
