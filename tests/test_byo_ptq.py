"""Post-training quantization of float PyTorch CNNs (torchvision-structured ResNet-18 and
MobileNetV2, a plain VGG), the import report, and `mcelsim quantize` -> simulate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from memory_models.usererror import UserInputError
from models import load_checkpoint
from models.tv_arch import mobilenet_v2, resnet18
from simulator import quantize
from simulator.cli import main
from simulator.importer import import_checkpoint
from simulator.ops import Conv, Linear
from simulator.ptq import quantize_model

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _with_bn_stats(model: nn.Module, shape=(1, 28, 28)) -> nn.Module:
    """Random BatchNorm statistics (a few train-mode passes) so that folding matters."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(32, *shape))
    return model.eval()


def _images(n=200, shape=(1, 28, 28), seed=0):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


@pytest.mark.parametrize(
    "factory, kwargs, shape",
    [(resnet18, {"width": 8}, (1, 28, 28)), (mobilenet_v2, {"width_mult": 0.25}, (3, 32, 32))],
)
def test_ptq_of_torchvision_architectures_matches_its_fake_quant_model(factory, kwargs, shape):
    torch.manual_seed(0)
    model = _with_bn_stats(factory(in_channels=shape[0], num_classes=10, **kwargs), shape)
    calib = _images(32, shape)
    qmodel = quantize_model(model, calib, weight_bits=4, act_bits=8)
    net = quantize(model, calib, weight_bits=4, act_bits=8)
    x = _images(100, shape, seed=1)
    codes = net.quantize_input(x)
    logits = net.forward(codes)
    np.testing.assert_array_equal(logits, net.reference_forward(codes))
    with torch.no_grad():
        fq = qmodel(torch.from_numpy(x)).numpy()
    assert np.mean(logits.argmax(1) == fq.argmax(1)) >= 0.99
    # logits in float units: hidden codes differ only where the float model sits on a tie
    assert np.mean(np.abs(logits * net.logit_scale - fq)) < 0.02 * np.mean(np.abs(fq))
    rows = net.meta["import_report"]
    layers = [op for op in net.ops if isinstance(op, Conv | Linear)]
    assert len(rows) == len(layers) == sum(isinstance(m, nn.Conv2d | nn.Linear)
                                           for m in model.modules())  # fmt: skip
    convs = [r for r in rows if r["op"] == "conv"]
    assert all(r["folded_bn"] for r in convs)  # every conv of these nets is followed by BN
    assert all(r["weight_bits"] == 4 and r["clipped"] == 0.0 for r in rows)
    assert all(0 < r["scale_min"] <= r["scale_max"] for r in rows)
    assert {r["acc_bits"] for r in rows} <= {32, 64}


def test_per_tensor_percentile_ptq_clips_and_reports_it():
    model = _with_bn_stats(nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 14 * 14, 10)))  # fmt: skip
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = 5.0  # an outlier the percentile observer clips
    net = quantize(model, _images(64), weight_bits=4, granularity="tensor", observer="percentile")
    rows = net.meta["import_report"]
    assert rows[0]["scale_min"] == rows[0]["scale_max"]  # one scale for the tensor
    assert 0 < rows[0]["clipped"] < 0.01  # the outlier, a few in 800
    assert rows[0]["folded_bn"] and not rows[1]["folded_bn"]
    w = net.weights()["layers._0.weight"]
    assert w.min() >= -7 and w.max() <= 7 and (np.abs(w) == 7).sum() >= 1


class _Gelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        return self.fc(torch.flatten(torch.sigmoid(self.conv(x)), 1))


@pytest.mark.parametrize("model, needle", [
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)),
     r"field '1'.*unsupported layer GELU"),
    (_Gelu(), "unsupported function sigmoid"),
    (nn.Sequential(nn.Conv2d(1, 4, 3, dilation=2), nn.Flatten(), nn.Linear(4 * 24 * 24, 10)),
     "dilation"),
])  # fmt: skip
def test_unsupported_layers_name_the_node(model, needle):
    with pytest.raises(UserInputError, match=needle):
        quantize(model.eval(), _images(8))


def test_bad_options_are_user_errors():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    for kwargs, needle in [({"weight_bits": 1}, "weight_bits"), ({"observer": "kl"}, "observer"),
                           ({"granularity": "row"}, "granularity")]:  # fmt: skip
        with pytest.raises(UserInputError, match=needle):
            quantize(model, _images(8), **kwargs)
    with pytest.raises(UserInputError, match="calibration"):
        quantize(model, np.zeros((8, 784), np.float32))


def test_quantize_cli_writes_a_checkpoint_simulate_takes(tmp_path, capsys):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = _with_bn_stats(resnet18(width=4))
    weights = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    ckpt = tmp_path / "r18.ckpt"
    args = ["quantize", "--model", "models.tv_arch:resnet18", "--model-args", '{"width": 4}',
            "--weights", str(weights), "--dataset", "synthetic", "--calib", "64",
            "--out", str(ckpt)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "BN folded" in out and "conv1" in out and "layer4.1.conv2" in out and "fc" in out
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["layers"]) == 21 and doc["layers"][-1]["layer"] == "fc"
    # an ordinary checkpoint: load, import, and the same network as PTQ in Python
    qmodel, meta = load_checkpoint(ckpt)
    assert meta["arch"] == "graph" and meta["dataset"]["name"] == "synthetic"
    net = import_checkpoint(ckpt)
    from models.datasets import load_dataset

    calib = load_dataset("synthetic", "train", limit=64).images
    direct = quantize(model, calib, weight_bits=4)
    x = net.quantize_input(load_dataset("synthetic", "test", limit=50).images)
    np.testing.assert_array_equal(net.forward(x), direct.forward(x))
    db = tmp_path / "r.db"
    assert main(["simulate", str(ckpt), "--ber", "0:0.01:0.01", "--chips", "2", "--limit", "50",
                 "--workers", "1", "--quiet", "--out", str(db), "--json"]) == 0  # fmt: skip
    res = json.loads(capsys.readouterr().out)
    assert res["models"][0]["clean_accuracy"] >= 0.0 and len(res["summary"]) == 2


@pytest.mark.parametrize("args, needle", [
    (["--model", "models.tv_arch"], "package.module:factory"),
    (["--model", "no_such_pkg.mod:f"], "cannot import"),
    (["--model", "models.tv_arch:resnet18", "--model-args", "{width"], "not valid JSON"),
    (["--model", "models.tv_arch:resnet18", "--model-args", '{"depth": 3}'], "rejects"),
    (["--model", "models.tv_arch:resnet18", "--weights", "missing.safetensors"], "not found"),
    (["--model", "models.tv_arch:resnet18", "--weights", "PICKLE"], "not a readable state"),
    (["--model", "models.tv_arch:resnet18", "--weights", "WRONG"], "do not match"),
    ([], "exactly one of --model, --onnx"),
])  # fmt: skip
def test_quantize_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, args, needle):
    from safetensors.torch import save_file

    pickle = tmp_path / "w.pt"
    torch.save({"model": _Gelu()}, pickle)  # a pickled module: weights_only=True refuses it
    wrong = tmp_path / "w.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, str(wrong))
    args = [str(pickle) if a == "PICKLE" else str(wrong) if a == "WRONG" else a for a in args]
    rc = main(["quantize", *args, "--dataset", "synthetic", "--calib", "8",
               "--out", str(tmp_path / "o.ckpt")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o.ckpt").exists()


@pytest.mark.parametrize("args, needle", [
    (["--calib", "0"], "--calib: 0 is out of range"),
    (["--weight-bits", "9"], "--weight-bits: 9 is out of range"),
    (["--out", "NOFOLDER/o.ckpt"], "--out"),
])  # fmt: skip
def test_quantize_cli_checks_ranges_and_out_before_work(tmp_path, capsys, args, needle):
    args = [str(tmp_path / a) if a.startswith("NOFOLDER") else a for a in args]
    base = {"--calib": "8", "--out": str(tmp_path / "o.ckpt")}
    base.update(dict(zip(args[::2], args[1::2])))
    argv = ["quantize", "--model", "models.tv_arch:resnet18", "--dataset", "synthetic"]
    argv += [x for kv in base.items() for x in kv]
    if args[0] == "--out":  # checked by the command, before calibration
        assert main(argv) == 2
    else:  # refused by the parser
        with pytest.raises(SystemExit, match="2"):
            main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "fix" in err[0], err

