"""Checkpoints: round trip with identical outputs; truncated or tampered files -> UserInputError."""

from __future__ import annotations

import json
import math
import struct

import pytest
import torch

from memory_models.usererror import UserInputError
from models import build_model, load_checkpoint, save_checkpoint
from models.checkpoint import CHECKPOINT_FORMAT, read_checkpoint_meta

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _trained(arch="vgg3", **kw):
    torch.manual_seed(0)
    model = build_model(arch, width=0.125, weight_bits=4, **kw)
    model.train()
    model(torch.rand(8, kw.get("in_channels", 1), 28, 28))  # moves BatchNorm running stats
    with torch.no_grad():
        model[-1].log_scale.fill_(0.3)
    return model.eval()


@pytest.mark.parametrize("arch", ["mlp", "vgg3", "resnet18", "mobilenetv2"])
def test_round_trip_identical_outputs(tmp_path, arch):
    model = _trained(arch, mean=[0.3], std=[0.4])
    path = tmp_path / "m.ckpt"
    save_checkpoint(path, model, {"loss": {"name": "mcel", "margin": 32.0}, "seed": 3,
                                  "metrics": {"test_accuracy": 0.5}})  # fmt: skip
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    x = torch.rand(5, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))
    for a, b in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert a[0] == b[0] and torch.equal(a[1], b[1])
    assert meta["arch"] == arch and meta["model"]["width"] == 0.125
    assert meta["weight_bits"] == 4 and meta["input_shape"] == [1, 28, 28]
    assert meta["normalization"] == {"mean": [0.3], "std": [0.4]} and meta["seed"] == 3
    assert meta["loss"]["margin"] == 32.0 and meta["versions"]["torch"] == torch.__version__
    assert meta["quantization"]["weights"][0]["bits"] == 4
    assert read_checkpoint_meta(path)["arch"] == arch
    # the weight codes the simulator reads are the same
    for m1, m2 in zip(model.modules(), loaded.modules()):
        if hasattr(m1, "weight_codes"):
            assert all(torch.equal(a, b) for a, b in zip(m1.weight_codes(), m2.weight_codes()))


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "m.ckpt"
    save_checkpoint(path, _trained(), {"seed": 0})
    return path


def _header(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return raw, n, json.loads(raw[8 : 8 + n])


def _rewrite(path, header, body):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)


def test_truncated_file(ckpt):
    raw = ckpt.read_bytes()
    for cut in (4, 100, len(raw) // 2, len(raw) - 1):
        ckpt.write_bytes(raw[:cut])
        with pytest.raises(UserInputError, match=str(ckpt.name)):
            load_checkpoint(ckpt)


def test_flipped_header_bytes(ckpt):
    raw, n, _ = _header(ckpt)
    for pos in (0, 3, 9, 8 + n // 2):
        bad = bytearray(raw)
        bad[pos] ^= 0xFF
        ckpt.write_bytes(bytes(bad))
        with pytest.raises(UserInputError):
            load_checkpoint(ckpt)


def test_flipped_tensor_byte_fails_digest(ckpt):
    raw, n, _ = _header(ckpt)
    bad = bytearray(raw)
    bad[8 + n + 17] ^= 0x01
    ckpt.write_bytes(bytes(bad))
    with pytest.raises(UserInputError, match="digest"):
        load_checkpoint(ckpt)


def test_wrong_tensor_shape_and_missing_tensor(ckpt):
    from safetensors.torch import load_file, save_file

    raw, n, header = _header(ckpt)
    meta = header["__metadata__"]
    tensors = load_file(str(ckpt))
    shaped = dict(tensors)
    shaped["1.weight"] = torch.zeros(9, 1, 3, 3)
    save_file(shaped, str(ckpt), metadata=meta)
    with pytest.raises(UserInputError, match="1.weight"):
        load_checkpoint(ckpt)
    missing = dict(tensors)
    del missing["12.weight"]
    save_file(missing, str(ckpt), metadata=meta)
    with pytest.raises(UserInputError, match="missing 12.weight"):
        load_checkpoint(ckpt)


def test_tampered_metadata(ckpt):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(ckpt))
    _, _, header = _header(ckpt)
    meta = dict(header["__metadata__"])
    info = json.loads(meta["mcelsim"])
    for change, pattern in (
        (lambda i: i["model"].update(arch="alexnet"), "unknown architecture"),
        (lambda i: i["model"].update(width=0.25), "1.weight"),
        (lambda i: i["model"].update(color=True), "cannot rebuild"),
        (lambda i: i["model"].update(act_bits=4), "quantization"),
    ):
        bad = json.loads(json.dumps(info))
        change(bad)
        save_file(tensors, str(ckpt), metadata={**meta, "mcelsim": json.dumps(bad)})
        with pytest.raises(UserInputError, match=pattern):
            load_checkpoint(ckpt)
    save_file(tensors, str(ckpt), metadata={**meta, "mcelsim": "{not json"})
    with pytest.raises(UserInputError, match="malformed"):
        load_checkpoint(ckpt)
    save_file(tensors, str(ckpt), metadata={**meta, "format": "other"})
    with pytest.raises(UserInputError, match=CHECKPOINT_FORMAT):
        load_checkpoint(ckpt)


def test_missing_file(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        load_checkpoint(tmp_path / "nope.ckpt")


def test_loading_executes_no_code(tmp_path):
    """A pickle file (code execution on torch.load) is rejected, never unpickled."""
    path = tmp_path / "evil.ckpt"
    torch.save({"x": torch.zeros(1)}, path)  # a zip/pickle file
    with pytest.raises(UserInputError):
        load_checkpoint(path)


def _retampered(path, tensors=None, info=None):
    """Rewrite a checkpoint with changed tensors / metadata and a *matching* digest."""
    from safetensors.torch import load_file, save_file

    from models.checkpoint import _digest

    _, _, header = _header(path)
    meta = dict(header["__metadata__"])
    ts = load_file(str(path))
    ts.update(tensors or {})
    full = json.loads(meta["mcelsim"])
    if info is not None:
        info(full)
    meta.update(mcelsim=json.dumps(full), sha256=_digest(ts))
    save_file(ts, str(path), metadata=meta)


@pytest.mark.parametrize(("name", "value", "pattern"), [
    ("1.weight", math.nan, "1.weight.*NaN or infinite"),
    ("1.weight", math.inf, "1.weight.*NaN or infinite"),
    ("3.running_mean", -math.inf, "3.running_mean.*NaN or infinite"),
    ("3.running_var", -1.0, "3.running_var.*negative batch-norm variance"),
    ("0.std", 0.0, "0.std.*input normalization"),
    ("0.mean", 0.7, "0.mean.*input normalization"),
    ("log_scale", 1e3, "log_scale.*out of range"),
])
def test_values_that_pass_the_digest_but_are_impossible(ckpt, name, value, pattern):
    from safetensors.torch import load_file

    ts = load_file(str(ckpt))
    key = next(k for k in ts if k == name or k.endswith("." + name))
    t = ts[key].clone()
    t.reshape(-1)[0] = value
    _retampered(ckpt, {key: t})
    with pytest.raises(UserInputError, match=pattern):
        load_checkpoint(ckpt)


def test_huge_metadata_is_refused_before_allocating(ckpt, monkeypatch):
    """A width or input size far above the stored tensors never reaches the allocator."""
    import models.checkpoint as ck

    real = ck.build_model

    def guarded(arch, **cfg):  # a real (not 'meta' device) build must match the file
        if torch.empty(0).device.type != "meta":
            assert cfg["width"] == 0.125
        return real(arch, **cfg)

    monkeypatch.setattr(ck, "build_model", guarded)
    for change, pattern in (
        (lambda i: i["model"].update(width=60.0), "1.weight.*needs"),
        (lambda i: i["model"].update(width=1e6), "width.*must be a number in"),
        (lambda i: i["model"].update(in_channels=10**9, mean=None, std=None), "in_channels"),
        (lambda i: i["model"].update(num_classes=10**6), "num_classes"),
        (lambda i: i.update(input_shape=[1, 10**5, 10**5]), "input_shape.*implies"),
    ):
        path = ckpt.with_name("t.ckpt")
        path.write_bytes(ckpt.read_bytes())
        _retampered(path, info=change)
        with pytest.raises(UserInputError, match=pattern):
            load_checkpoint(path)


def test_dtype_change_is_named(ckpt):
    from safetensors.torch import load_file

    t = load_file(str(ckpt))["1.weight"].double()
    _retampered(ckpt, {"1.weight": t})
    with pytest.raises(UserInputError, match="1.weight.*F64.*needs F32"):
        load_checkpoint(ckpt)


def test_folder_given_as_checkpoint(tmp_path):
    with pytest.raises(UserInputError, match="is a folder"):
        load_checkpoint(tmp_path)
