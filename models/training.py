"""Quantization-aware training with CE, MCEL or MHL, optionally with injected bit errors.

`train(TrainConfig(...), out="runs/x.ckpt")` trains a zoo model on a dataset, saves a resume
file `<out>.partial` at every epoch end (model, optimizer and scheduler state in safetensors,
the rest as JSON in its header) and the final checkpoint at `out`. Rerunning with the same
config continues from the resume file and gives the same weights as an uninterrupted run.

Determinism: weights are initialized under `torch.manual_seed(seed)` (inside
`torch.random.fork_rng`, so the caller's global RNG is untouched); epoch e shuffles with a
`torch.Generator` seeded from (seed, e); injected bit errors at step t of epoch e draw from
`np.random.default_rng(SeedSequence([seed, e, t]))`. Results are identical for the same
seed, config and thread count (`threads`; float reductions may change with it).

Error injection (RandBET-style): in each training forward pass the weight codes q of every
QConv2d/QLinear are encoded (`memory_models.encode`, default "offset-binary" q + 2^(b-1);
"binary" for 1-bit weights), corrupted by `BitErrorModel(p01=ber, p10=ber)`, decoded and
rescaled; gradients flow to the clean weights (straight-through:
w_fq + (w_err - w_fq).detach()). Evaluation is clean.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from memory_models.usererror import UserInputError
from models.checkpoint import save_checkpoint, versions
from models.datasets import DATASETS, Dataset, dataset_info, load_dataset
from models.losses import LOSSES, make_loss, mean_logit_margin
from models.quant import QConv2d, QLinear, weight_scale
from models.zoo import ARCHITECTURES, build_model

__all__ = ["TrainConfig", "train", "evaluate", "inject_bit_errors", "partial_path", "SCHEDULES"]

log = logging.getLogger(__name__)

SCHEDULES = ("cosine", "step", "none")
ENCODINGS = ("offset-binary", "twos-complement", "sign-magnitude")  # memory_models names
PARTIAL_FORMAT = "mcelsim-partial-1"


@dataclass
class TrainConfig:
    """Everything that determines a training run (recorded in the checkpoint)."""

    dataset: str = "fashion-mnist"
    arch: str = "vgg3"
    weight_bits: int = 4
    act_bits: int = 8
    input_bits: int = 8
    granularity: str = "channel"
    width: float = 1.0
    logit_scale: bool = True  # learnable scalar on the logits (False: ablation without it)
    loss: str = "ce"
    margin: float = 32.0  # MCEL margin m, logit units
    logit_bound: float = 100.0  # MCEL L
    mhl_b: float = 128.0  # MHL margin b
    inject_ber: float = 0.0  # per-bit flip probability during training (0 = off)
    inject_encoding: str = "offset-binary"  # 1-bit weights always use "binary"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    seed: int = 0
    limit: int | None = None  # first N training images
    test_limit: int | None = None  # first N test images
    data_dir: str | None = None
    threads: int | None = None  # torch threads (None: all cores)
    eval_batch_size: int = 1000

    def validate(self) -> None:
        """Raise UserInputError for impossible values."""
        src = "train config"

        def bad(field: str, problem: str, fix: str | None = None) -> None:
            option = "--" + field.replace("_", "-")
            raise UserInputError(src, field, problem,
                                 fix or f"pass {option} within the range `mcelsim train --help` "
                                 "shows")  # fmt: skip

        if self.dataset not in DATASETS:
            bad("dataset", f"unknown dataset {self.dataset!r}", f"use one of {DATASETS}")
        if self.arch not in ARCHITECTURES:
            bad("arch", f"unknown architecture {self.arch!r}", f"use one of {ARCHITECTURES}")
        if self.loss not in LOSSES:
            bad("loss", f"unknown loss {self.loss!r}", f"use one of {LOSSES}")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"unknown schedule {self.schedule!r}", f"use one of {SCHEDULES}")
        if self.inject_encoding not in ENCODINGS:
            bad("inject_encoding", f"unknown encoding {self.inject_encoding!r}",
                f"use one of {ENCODINGS}")  # fmt: skip
        if not 0.0 <= self.inject_ber <= 0.5:
            bad("inject_ber", f"must be in [0, 0.5], got {self.inject_ber}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            bad("batch_size", "must be >= 2 (BatchNorm needs two samples)")
        for name in ("lr", "logit_bound", "mhl_b", "width"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                bad(name, f"must be a positive number, got {v}")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            bad("margin", f"must be >= 0, got {self.margin}")
        if int(self.seed) != self.seed or self.seed < 0:
            bad("seed", f"must be an integer >= 0, got {self.seed}")
        if self.weight_decay < 0:
            bad("weight_decay", f"must be >= 0, got {self.weight_decay}")
        for name in ("limit", "test_limit", "threads"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                bad(name, f"must be >= 1, got {v}")
        if not 1 <= self.weight_bits <= 8:
            bad("weight_bits", f"must be in 1..8, got {self.weight_bits}")

    def model_kwargs(self) -> dict[str, Any]:
        """build_model keyword arguments for this config and its dataset."""
        info = dataset_info(self.dataset)
        return {
            "num_classes": info["num_classes"],
            "in_channels": info["in_channels"],
            "input_size": info["input_size"],
            "weight_bits": self.weight_bits,
            "act_bits": self.act_bits,
            "input_bits": self.input_bits,
            "granularity": self.granularity,
            "width": self.width,
            "logit_scale": self.logit_scale,
            "mean": info["mean"],
            "std": info["std"],
        }

    def to_json(self) -> dict[str, Any]:
        """The config as a JSON-ready dict (without data_dir, which does not affect results)."""
        d = dataclasses.asdict(self)
        d.pop("data_dir")
        return d


def partial_path(out: str | os.PathLike) -> Path:
    """The resume file of a run writing `out`."""
    return Path(str(out) + ".partial")


def _seed_int(*key: int) -> int:
    """A 63-bit integer seed derived from `key` (via numpy's SeedSequence)."""
    return int(np.random.SeedSequence(list(key)).generate_state(2, np.uint64)[0] >> np.uint64(1))


# --- error injection --------------------------------------------------------------------


class _Injector:
    """weight_fault hook: flips bits of each layer's weight codes through a BitErrorModel."""

    def __init__(self, ber: float, encoding: str):
        from memory_models import BitErrorModel, decode, encode

        self.model = BitErrorModel(p01=ber, p10=ber)
        self.encode, self.decode = encode, decode
        self.encoding = encoding
        self.rng = np.random.default_rng(0)

    def __call__(self, layer: nn.Module, w_fq: torch.Tensor) -> torch.Tensor:
        bits = layer.weight_bits
        encoding = "binary" if bits == 1 else self.encoding
        s = weight_scale(layer.weight, bits, layer.granularity)
        shape = (-1,) + (1,) * (w_fq.dim() - 1)
        with torch.no_grad():
            q = torch.round(w_fq.detach() / s.reshape(shape)).to(torch.int16).numpy()
            codes = self.encode(q, bits, encoding)
            bad = self.decode(self.model.corrupt(codes, bits, self.rng), bits, encoding)
            w_err = torch.from_numpy(np.asarray(bad, dtype=np.float32)) * s.reshape(shape)
        return w_fq + (w_err - w_fq).detach()


@contextmanager
def inject_bit_errors(model: nn.Module, ber: float, encoding: str = "offset-binary"):
    """Within the block every QConv2d/QLinear forward reads corrupted weights (see module doc).

    Yields the injector; set `injector.rng` (a np.random.Generator) before each forward.
    """
    inj = _Injector(ber, encoding)
    layers = [m for m in model.modules() if isinstance(m, QConv2d | QLinear)]
    for m in layers:
        m.weight_fault = inj
    try:
        yield inj
    finally:
        for m in layers:
            m.weight_fault = None


# --- evaluation -------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, batch_size: int = 1000) -> dict[str, float]:
    """Clean accuracy (fraction) and mean logit margin of `model` (eval mode) on `data`."""
    was_training = model.training
    model.eval()
    images = torch.from_numpy(data.images)
    labels = torch.from_numpy(data.labels)
    correct, margin_sum = 0, 0.0
    for i in range(0, len(data), batch_size):
        y = model(images[i : i + batch_size])
        correct += int((y.argmax(1) == labels[i : i + batch_size]).sum())
        margin_sum += float(mean_logit_margin(y.double())) * y.shape[0]
    model.train(was_training)
    n = max(len(data), 1)
    return {"accuracy": correct / n, "mean_logit_margin": margin_sum / n, "n": len(data)}


# --- resume files -----------------------------------------------------------------------


def _save_partial(path: Path, model, opt, sched, state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in
               model.state_dict().items()}  # fmt: skip
    osd = opt.state_dict()
    opt_scalars: dict[str, dict[str, Any]] = {}
    for idx, st in osd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = val.detach().contiguous().clone()
            else:
                opt_scalars.setdefault(str(idx), {})[key] = val
    header = {
        "format": PARTIAL_FORMAT,
        "state": json.dumps(state),
        "param_groups": json.dumps(osd["param_groups"]),
        "optim_scalars": json.dumps(opt_scalars),
        "scheduler": json.dumps(sched.state_dict() if sched is not None else None),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=header)
    os.replace(tmp, path)


def _load_partial(path: Path, model, opt, sched, config_json: dict) -> dict[str, Any]:
    from safetensors import safe_open

    fix = f"delete {path} to start over"
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
        if header.get("format") != PARTIAL_FORMAT:
            raise ValueError("not an mcelsim resume file")
        state = json.loads(header["state"])
        groups = json.loads(header["param_groups"])
        scalars = json.loads(header["optim_scalars"])
        sched_state = json.loads(header["scheduler"])
    except Exception as err:
        raise UserInputError(path, None, f"unreadable resume file ({err})", fix) from err
    if state.get("config") != config_json:
        raise UserInputError(path, "config", "the resume file belongs to a run with other "
                             "settings", f"rerun with the same options, or {fix}")  # fmt: skip
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        opt_state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, key = k.split(".", 2)
                opt_state.setdefault(int(idx), {})[key] = v
        for idx, st in scalars.items():
            opt_state.setdefault(int(idx), {}).update(st)
        opt.load_state_dict({"state": opt_state, "param_groups": groups})
        if sched is not None:
            sched.load_state_dict(sched_state)
    except (RuntimeError, KeyError, ValueError) as err:
        raise UserInputError(path, None, f"resume file does not fit this model ({err})",
                             fix) from err  # fmt: skip
    return state


# --- training ---------------------------------------------------------------------------


def _make_scheduler(opt, config: TrainConfig):
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, config.epochs // 3), gamma=0.1)
    return None


@contextmanager
def _torch_settings(threads: int):
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    # NaN-filling of fresh tensors costs ~10 % on CPU and changes no result of ours
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)
        torch.utils.deterministic.fill_uninitialized_memory = old_fill


def train(
    config: TrainConfig,
    out: str | os.PathLike | None = None,
    *,
    progress: bool = False,
    epoch_callback: Callable[[int, dict[str, Any]], None] | None = None,
    train_data: Dataset | None = None,
    test_data: Dataset | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train `config`; returns (model in eval mode, metadata dict as stored in checkpoints).

    out: checkpoint path; with it, `<out>.partial` is written at each epoch end (and
    continued from if present), and the final checkpoint is written to `out`.
    progress: show a tqdm bar on stderr. epoch_callback(epoch, stats) runs after each
    epoch's resume file is saved (a KeyboardInterrupt raised there stops the run cleanly).
    train_data/test_data: preloaded datasets (else loaded from config.dataset).
    """
    config.validate()
    threads = config.threads or os.cpu_count() or 1
    if train_data is None:
        train_data = load_dataset(config.dataset, "train", config.data_dir, config.limit)
    if test_data is None:
        test_data = load_dataset(config.dataset, "test", config.data_dir, config.test_limit)
    cfg_json = config.to_json()
    loss_fn = make_loss(config.loss, config.margin, config.logit_bound, config.mhl_b)
    with _torch_settings(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(config.arch, **config.model_kwargs())
        opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sched = _make_scheduler(opt, config)
        state: dict[str, Any] = {"config": cfg_json, "epochs_done": 0, "history": [],
                                 "train_seconds": 0.0}  # fmt: skip
        part = partial_path(out) if out is not None else None
        if part is not None and part.exists():
            state = _load_partial(part, model, opt, sched, cfg_json)
            log.info("resuming %s after epoch %d", part, state["epochs_done"])
        images = torch.from_numpy(train_data.images)
        labels = torch.from_numpy(train_data.labels)
        n = len(train_data)
        for epoch in range(state["epochs_done"], config.epochs):
            t0 = time.perf_counter()
            stats = _train_epoch(model, opt, loss_fn, images, labels, n, epoch, config, progress)
            if sched is not None:
                sched.step()
            stats["seconds"] = time.perf_counter() - t0
            state["epochs_done"] = epoch + 1
            state["history"].append(stats)
            state["train_seconds"] += stats["seconds"]
            log.info("epoch %d: loss %.4f acc %.4f margin %.3f", epoch + 1, stats["loss"],
                     stats["accuracy"], stats["mean_logit_margin"])  # fmt: skip
            if part is not None:
                part.parent.mkdir(parents=True, exist_ok=True)
                _save_partial(part, model, opt, sched, state)
            if epoch_callback is not None:
                epoch_callback(epoch + 1, stats)
        metrics = evaluate(model, test_data, config.eval_batch_size)
    model.eval()
    meta = _meta(config, train_data, test_data, state, metrics, threads)
    if out is not None:
        save_checkpoint(out, model, meta)
        if part is not None and part.exists():
            part.unlink()
    return model, meta


def _train_epoch(model, opt, loss_fn, images, labels, n, epoch, config, progress):
    from tqdm import tqdm

    model.train()
    gen = torch.Generator().manual_seed(_seed_int(config.seed, epoch))
    perm = torch.randperm(n, generator=gen)
    bs = config.batch_size
    starts = [i for i in range(0, n, bs) if min(bs, n - i) >= 2]  # BatchNorm needs >= 2
    tot_loss, tot_correct, tot_margin, seen = 0.0, 0, 0.0, 0
    with ExitStack() as stack:
        inj = None
        if config.inject_ber > 0:
            inj = stack.enter_context(
                inject_bit_errors(model, config.inject_ber, config.inject_encoding)
            )
        bar = stack.enter_context(
            tqdm(starts, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress,
                 leave=True, dynamic_ncols=True, mininterval=0.5)
        )  # fmt: skip
        for step, i in enumerate(bar):
            idx = perm[i : i + bs]
            x, y = images[idx], labels[idx]
            if inj is not None:
                inj.rng = np.random.default_rng(np.random.SeedSequence([config.seed, epoch, step]))
            logits = model(x)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                k = y.shape[0]
                tot_loss += float(loss.detach()) * k
                tot_correct += int((logits.argmax(1) == y).sum())
                tot_margin += float(mean_logit_margin(logits.double())) * k
                seen += k
            if progress:
                bar.set_postfix(loss=f"{tot_loss / seen:.4f}", acc=f"{tot_correct / seen:.4f}",
                                margin=f"{tot_margin / seen:.2f}", refresh=False)  # fmt: skip
    seen = max(seen, 1)
    return {"epoch": epoch + 1, "loss": tot_loss / seen, "accuracy": tot_correct / seen,
            "mean_logit_margin": tot_margin / seen,
            "lr": opt.param_groups[0]["lr"]}  # fmt: skip


def _meta(config, train_data, test_data, state, metrics, threads) -> dict[str, Any]:
    return {
        "loss": {"name": config.loss, "margin": config.margin if config.loss == "mcel" else None,
                 "L": config.logit_bound if config.loss == "mcel" else None,
                 "mhl_b": config.mhl_b if config.loss == "mhl" else None},  # fmt: skip
        "margin": config.margin if config.loss == "mcel" else None,
        "inject": {"ber": config.inject_ber, "encoding": config.inject_encoding},
        "dataset": {"name": config.dataset, "mean": train_data.mean, "std": train_data.std,
                    "train_size": len(train_data), "test_size": len(test_data),
                    "num_classes": train_data.num_classes},  # fmt: skip
        "metrics": {"test_accuracy": metrics["accuracy"],
                    "mean_logit_margin": metrics["mean_logit_margin"],
                    "test_size": metrics["n"]},  # fmt: skip
        "seed": config.seed,
        "train": config.to_json(),
        "history": state["history"],
        "train_seconds": state["train_seconds"],
        "threads": threads,
        "versions": versions(),
    }
