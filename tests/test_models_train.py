"""Training: determinism, exact resume, error injection (straight-through), the CLI, a real run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from memory_models.usererror import UserInputError
from models import load_checkpoint
from models.quant import QConv2d, QLinear
from models.training import TrainConfig, inject_bit_errors, partial_path, train
from models.zoo import build_model
from simulator.cli import main

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _cfg(**kw) -> TrainConfig:
    base = dict(dataset="synthetic", arch="vgg3", width=0.125, weight_bits=4, epochs=2,
                batch_size=64, limit=256, test_limit=256, threads=1, lr=3e-3, seed=5)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_same_weights_and_learns():
    m1, meta1 = train(_cfg(loss="mcel", margin=8.0))
    m2, meta2 = train(_cfg(loss="mcel", margin=8.0))
    assert _same_weights(m1, m2)
    assert meta1["metrics"] == meta2["metrics"]
    assert meta1["metrics"]["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    m3, _ = train(_cfg(loss="mcel", margin=8.0, seed=6))
    assert not _same_weights(m1, m3)
    assert not m1.training


def test_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(_cfg(epochs=1, limit=64, test_limit=64))
    assert torch.equal(torch.rand(3), expected)


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    cfg = _cfg(epochs=3, loss="ce", schedule="cosine")
    ref, ref_meta = train(cfg, out=tmp_path / "ref.ckpt")
    out = tmp_path / "run.ckpt"

    def stop(epoch, stats):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=out, epoch_callback=stop)
    assert partial_path(out).exists() and not out.exists()
    resumed, meta = train(cfg, out=out)
    assert _same_weights(ref, resumed)
    assert [h["loss"] for h in meta["history"]] == [h["loss"] for h in ref_meta["history"]]
    assert not partial_path(out).exists()
    loaded, lmeta = load_checkpoint(out)
    assert _same_weights(loaded, resumed) and lmeta["metrics"] == meta["metrics"]
    # a resume file from other settings is refused, not silently mixed in
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=out, epoch_callback=stop)
    with pytest.raises(UserInputError, match="other settings"):
        train(_cfg(epochs=3, loss="ce", lr=1e-2), out=out)


def test_injection_flips_codes_and_gradient_is_straight_through():
    torch.manual_seed(0)
    layer = QLinear(64, 50, weight_bits=4)
    clean = layer.quantized_weight().detach()
    q, s = layer.weight_codes()
    with inject_bit_errors(torch.nn.Sequential(layer), ber=0.1) as inj:
        inj.rng = np.random.default_rng(1)
        w = layer.quantized_weight()
        g = torch.randn_like(w)
        (w * g).sum().backward()
    torch.testing.assert_close(layer.weight.grad, g)  # flows to the clean weights
    codes = torch.round(w.detach() / s[:, None])
    assert torch.allclose(codes * s[:, None], w.detach())
    assert int(codes.min()) >= -8 and int(codes.max()) <= 7  # offset binary, 4 bits
    changed = float((codes != q.float()).float().mean())
    p = 1 - 0.9**4  # some of 4 bits flipped
    sd = math.sqrt(p * (1 - p) / codes.numel())
    assert abs(changed - p) < 5 * sd
    assert layer.weight_fault is None
    torch.testing.assert_close(layer.quantized_weight().detach(), clean)


def test_injection_binarized_weights():
    torch.manual_seed(1)
    model = build_model("mlp", width=0.125, weight_bits=1)
    layer = next(m for m in model.modules() if isinstance(m, QConv2d | QLinear))
    q, s = layer.weight_codes()
    with inject_bit_errors(model, ber=0.2) as inj:
        inj.rng = np.random.default_rng(2)
        w = layer.quantized_weight().detach()
    codes = torch.round(w / s[:, None])
    assert set(torch.unique(codes).tolist()) <= {-1.0, 1.0}
    frac = float((codes != q.float()).float().mean())
    sd = math.sqrt(0.2 * 0.8 / codes.numel())
    assert abs(frac - 0.2) < 5 * sd


def test_training_with_injected_errors_is_deterministic():
    cfg = _cfg(epochs=1, inject_ber=0.01, loss="mhl", mhl_b=16.0, weight_bits=2)
    m1, meta = train(cfg)
    m2, _ = train(cfg)
    assert _same_weights(m1, m2)
    m3, _ = train(_cfg(epochs=1, loss="mhl", mhl_b=16.0, weight_bits=2))
    assert not _same_weights(m1, m3)
    assert meta["inject"] == {"ber": 0.01, "encoding": "offset-binary"}


def test_bad_config():
    for kw, field in ((dict(loss="l2"), "loss"), (dict(epochs=0), "epochs"),
                      (dict(inject_ber=0.7), "inject_ber"), (dict(arch="x"), "arch"),
                      (dict(schedule="exp"), "schedule"), (dict(margin=-1.0), "margin"),
                      (dict(seed=-1), "seed")):
        with pytest.raises(UserInputError, match=field):
            train(_cfg(**kw))


def test_cli_train_json_and_errors(tmp_path, capsys):
    out = tmp_path / "cli.ckpt"
    args = ["train", "--dataset", "synthetic", "--arch", "mlp", "--width", "0.125",
            "--weight-bits", "2", "--loss", "mcel", "--margin", "4", "--epochs", "1",
            "--limit", "128", "--test-limit", "128", "--threads", "1", "--no-progress",
            "--out", str(out), "--json"]  # fmt: skip
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["checkpoint"] == str(out) and 0 <= result["test_accuracy"] <= 1
    model, meta = load_checkpoint(out)
    assert meta["loss"]["name"] == "mcel" and meta["margin"] == 4.0
    assert meta["dataset"]["name"] == "synthetic" and meta["weight_bits"] == 2
    assert meta["metrics"]["test_accuracy"] == result["test_accuracy"]
    # a corrupt resume file: one line, exit 2
    partial_path(out).write_bytes(b"garbage")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "partial" in err and "Traceback" not in err
    partial_path(out).unlink()
    assert main([*args[:-3], "--dataset", "mnist", "--data-dir", str(tmp_path), "--out",
                 str(out)]) == 2  # fmt: skip
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ex:
        main(["train", "--loss", "hinge", "--out", str(out)])
    assert ex.value.code == 2


@pytest.mark.dataset
@pytest.mark.skipif(not (FMNIST / "t10k-images-idx3-ubyte.gz").exists(), reason="no Fashion-MNIST")
def test_real_fashion_mnist_short_run(tmp_path):
    cfg = TrainConfig(dataset="fashion-mnist", arch="mlp", width=0.5, weight_bits=4,
                      loss="mcel", margin=8.0, epochs=2, limit=5000, test_limit=2000,
                      threads=1, seed=0)  # fmt: skip
    model, meta = train(cfg, out=tmp_path / "fm.ckpt")
    assert meta["metrics"]["test_accuracy"] > 0.70
    assert meta["metrics"]["mean_logit_margin"] > 0
    loaded, _ = load_checkpoint(tmp_path / "fm.ckpt")
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))


def test_package_exports():
    import models
    import models.training  # noqa: F401  (importing the module must not shadow models.train)

    names = {"mcel_loss", "mhl_loss", "mean_logit_margin", "build_model", "ARCHITECTURES",
             "load_checkpoint", "save_checkpoint", "load_dataset", "DATASETS", "train"}
    assert names <= set(dir(models))
    from models import train as train_fn

    _, meta = train_fn(_cfg(arch="mlp", epochs=1, limit=64, test_limit=64))
    assert 0 <= meta["metrics"]["test_accuracy"] <= 1


@pytest.mark.parametrize("arch", ["vgg7", "resnet18", "mobilenetv2"])
def test_train_runs_every_arch_deterministically_with_injection(arch):
    """Deterministic mode accepts every op of the zoo; 1-bit weights use the binary code."""
    cfg = _cfg(dataset="synthetic-rgb", arch=arch, width=0.0625, epochs=1, limit=16,
               test_limit=8, batch_size=8, inject_ber=0.01, weight_bits=1)  # fmt: skip
    m1, meta = train(cfg)
    m2, _ = train(cfg)
    assert _same_weights(m1, m2) and meta["train"]["weight_bits"] == 1
