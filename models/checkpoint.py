"""Checkpoints: a zoo model's tensors in safetensors, its metadata as JSON in the header.

Header metadata (safetensors `__metadata__`, string values):
  "format": CHECKPOINT_FORMAT
  "mcelsim": JSON object — "model" (arch + every build_model argument, enough to rebuild
      the network), "arch", bit widths, "quantization" (per layer: weight bits, granularity;
      per activation quantizer: bits, signed, range, scale), "dataset" (name, mean, std),
      "input_shape" [C, H, W], "num_classes", "versions", plus what the caller passed
      (loss, margin, metrics, seed, training config).
  "sha256": hex digest of every tensor's name, dtype, shape and bytes, in name order.
Loading never executes code from the file: it parses JSON, rebuilds the model with
`build_model` and copies tensors in after checking names, dtypes, shapes and the digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from memory_models.usererror import UserInputError
from models.quant import QConv2d, QLinear, QuantAct
from models.zoo import build_model

__all__ = ["CHECKPOINT_FORMAT", "save_checkpoint", "load_checkpoint", "quantization_summary",
           "versions"]  # fmt: skip

CHECKPOINT_FORMAT = "mcelsim-checkpoint-1"
_FIX = "re-create the checkpoint with `mcelsim train` (the file is truncated or was modified)"


def versions() -> dict[str, str]:
    """Versions of mcelsim, torch and python (recorded in checkpoints)."""
    try:
        mcelsim = importlib_metadata.version("mcelsim")
    except importlib_metadata.PackageNotFoundError:
        mcelsim = "unknown"
    return {"mcelsim": mcelsim, "torch": torch.__version__, "python": platform.python_version()}


def quantization_summary(model: nn.Module) -> dict[str, Any]:
    """Per-layer weight quantization and per-quantizer activation ranges of `model`."""
    weights, acts = [], []
    for name, m in model.named_modules():
        if isinstance(m, QConv2d | QLinear):
            weights.append({"name": name, "kind": type(m).__name__, "bits": m.weight_bits,
                            "granularity": m.granularity,
                            "shape": list(m.weight.shape)})  # fmt: skip
        elif isinstance(m, QuantAct):
            acts.append({"name": name, "kind": type(m).__name__, "bits": m.bits,
                         "signed": m.signed, "hi": m.hi, "scale": m.scale})  # fmt: skip
    return {"weights": weights, "activations": acts}


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any]) -> None:
    """Write `model` (a zoo model from build_model) and JSON-serializable `meta` to `path`.

    Written to a temporary file and renamed, so a crash never leaves half a checkpoint.
    """
    from safetensors.torch import save_file

    cfg = getattr(model, "mcelsim_config", None)
    if cfg is None:
        raise ValueError("save_checkpoint needs a model made by models.build_model")
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in model.state_dict().items()}
    full = dict(meta)
    full.update(
        model=dict(cfg),
        arch=cfg["arch"],
        weight_bits=cfg["weight_bits"],
        act_bits=cfg["act_bits"],
        input_bits=cfg["input_bits"],
        granularity=cfg["granularity"],
        input_shape=[cfg["in_channels"], cfg["input_size"], cfg["input_size"]],
        num_classes=cfg["num_classes"],
        normalization={"mean": cfg["mean"], "std": cfg["std"]},
        quantization=quantization_summary(model),
    )
    full.setdefault("versions", versions())
    header = {
        "format": CHECKPOINT_FORMAT,
        "mcelsim": json.dumps(full, sort_keys=True, allow_nan=False),
        "sha256": _digest(tensors),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=header)
    os.replace(tmp, path)


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata dict of a checkpoint, without loading its tensors."""
    header, _ = _read(path, tensors=False)
    return header


# safetensors' names of the dtypes a zoo model's state dict holds.
_ST_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16",
              torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32",
              torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def _read(path, tensors: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, tensors) of a checkpoint. With tensors=False the second dict maps each
    tensor name to (safetensors dtype name, shape) read from the header, nothing loaded."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        raise UserInputError(path, None, "is a folder, not a checkpoint file",
                             "pass the .ckpt file written by `mcelsim train`")  # fmt: skip
    if not path.is_file():
        raise UserInputError(path, None, "checkpoint file not found",
                             "check the path, or train one with `mcelsim train`")  # fmt: skip
    out: dict[str, Any] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            for k in fh.keys():  # noqa: SIM118 (safe_open has no __iter__)
                if tensors:
                    out[k] = fh.get_tensor(k)
                else:
                    sl = fh.get_slice(k)
                    out[k] = (sl.get_dtype(), tuple(sl.get_shape()))
    except UserInputError:
        raise
    except Exception as err:  # safetensors raises its own error types for bad headers
        raise UserInputError(path, "header", f"not a readable safetensors file ({err})",
                             _FIX) from err  # fmt: skip
    if header.get("format") != CHECKPOINT_FORMAT:
        raise UserInputError(path, "format", f"not an mcelsim checkpoint (format "
                             f"{header.get('format')!r}, expected {CHECKPOINT_FORMAT!r})",
                             _FIX)  # fmt: skip
    try:
        meta = json.loads(header["mcelsim"])
    except (KeyError, ValueError) as err:
        raise UserInputError(path, "mcelsim", "metadata JSON missing or malformed", _FIX) from err
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        raise UserInputError(path, "mcelsim.model", "model configuration missing", _FIX)
    meta["_sha256"] = header.get("sha256", "")
    return meta, out


def _build(path, meta: dict[str, Any]) -> nn.Module:
    """The zoo model the metadata describes (on the current torch device)."""
    cfg = dict(meta["model"])
    arch = cfg.pop("arch", None)
    try:
        return build_model(arch, **cfg)
    except UserInputError as err:
        raise UserInputError(path, f"mcelsim.model.{err.field}", err.problem, _FIX) from err
    except (TypeError, ValueError, OverflowError) as err:
        raise UserInputError(path, "mcelsim.model", f"cannot rebuild the model ({err})",
                             _FIX) from err  # fmt: skip


def _check_layout(path, meta: dict[str, Any], stored: dict[str, tuple[str, tuple]]) -> None:
    """Names, dtypes and shapes the metadata implies must be those stored, checked on a
    skeleton model on torch's 'meta' device: metadata that implies a model larger than the
    file (a tampered width, channel count or size) is refused before anything is allocated."""
    with torch.device("meta"):
        skeleton = _build(path, meta)
    expected = skeleton.state_dict()
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing or extra:
        problem = "tensor names do not match the architecture"
        if missing:
            problem += f"; missing {', '.join(missing[:3])}"
        if extra:
            problem += f"; unexpected {', '.join(extra[:3])}"
        raise UserInputError(path, "tensors", problem, _FIX)
    for k, ref in expected.items():
        dtype, shape = stored[k]
        want = _ST_DTYPES.get(ref.dtype, str(ref.dtype))
        if shape != tuple(ref.shape) or dtype != want:
            raise UserInputError(path, k, f"tensor is {dtype} {list(shape)}, the architecture "
                                 f"in the metadata needs {want} {list(ref.shape)}",
                                 _FIX)  # fmt: skip
    cfg = skeleton.mcelsim_config
    implied = {"input_shape": [cfg["in_channels"], cfg["input_size"], cfg["input_size"]],
               "num_classes": cfg["num_classes"]}
    for key, want in implied.items():
        if key in meta and meta[key] != want:
            raise UserInputError(path, f"mcelsim.{key}", f"is {meta[key]!r}, the model "
                                 f"configuration implies {want!r}", _FIX)  # fmt: skip


# |log_scale| above this overflows the logit scale exp(log_scale) in float32 arithmetic.
_MAX_LOG_SCALE = 80.0


def _check_values(path, model: nn.Module) -> None:
    """Refuse tensor values that make the folded integer network meaningless: NaN or
    infinite entries, negative BatchNorm variances, an input normalization that differs
    from the metadata or is not positive, an overflowing logit scale."""
    from models.quant import InputQuant, LogitScale

    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise UserInputError(path, name, f"tensor holds {bad} NaN or infinite value(s)",
                                 _FIX)  # fmt: skip
    cfg = model.mcelsim_config
    for mname, m in model.named_modules():
        where = f"{mname}." if mname else ""
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) and m.running_var is not None:
            if bool((m.running_var < 0).any()):
                raise UserInputError(path, f"{where}running_var", "negative batch-norm "
                                     "variance (impossible)", _FIX)  # fmt: skip
        elif isinstance(m, InputQuant):
            for key in ("mean", "std"):
                want = torch.tensor(cfg[key], dtype=torch.float32)
                if not torch.equal(getattr(m, key).reshape(-1), want):
                    raise UserInputError(path, f"{where}{key}", f"input normalization differs "
                                         f"from the metadata's {key} {cfg[key]}",
                                         _FIX)  # fmt: skip
        elif isinstance(m, LogitScale):
            log_scale = float(m.log_scale.detach())
            if abs(log_scale) > _MAX_LOG_SCALE:
                raise UserInputError(path, f"{where}log_scale", f"logit scale exp({log_scale:g})"
                                     f" is out of range (|log_scale| <= {_MAX_LOG_SCALE:g})",
                                     _FIX)  # fmt: skip


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, metadata dict) from a checkpoint written by save_checkpoint.

    Raises UserInputError for a missing, truncated or modified file (bad header, unknown
    architecture, missing or extra tensor, wrong dtype or shape, digest mismatch) and for
    values no trained network holds (NaN or infinite tensors, negative variances, ...).
    Shapes are checked against the metadata before any tensor is loaded or allocated.
    """
    meta, layout = _read(path, tensors=False)
    meta.pop("_sha256")
    _check_layout(path, meta, layout)
    meta, tensors = _read(path, tensors=True)
    digest = meta.pop("_sha256")
    if _digest(tensors) != digest:
        raise UserInputError(path, "sha256", "tensor data does not match the recorded digest",
                             _FIX)  # fmt: skip
    model = _build(path, meta)
    model.load_state_dict(tensors, strict=True)
    model.eval()
    _check_values(path, model)
    _check_quantizers(path, model, meta)
    return model, meta


def _check_quantizers(path, model: nn.Module, meta: dict[str, Any]) -> None:
    """The rebuilt model's quantizers must match the recorded ones (tampered metadata)."""
    recorded = meta.get("quantization")
    if recorded is None:
        return
    if quantization_summary(model) != recorded:
        raise UserInputError(path, "mcelsim.quantization", "recorded quantization does not "
                             "match the rebuilt model", _FIX)  # fmt: skip
