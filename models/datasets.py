"""Image datasets read offline from their standard files (numpy only at module level).

`load_dataset(name, split)` returns float32 NCHW images in [0, 1] and int64 labels.
Where files are looked for, in order: `data_dir` (and `data_dir/<name>`), `$MCELSIM_DATA`
(and `$MCELSIM_DATA/<name>`), then the system locations (Debian's
`/usr/share/datasets/<name>`). Formats:
  fashion-mnist, mnist: IDX files `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`
  svhn: `{train,test}_32x32.mat` (format-2 cropped digits; label 10 means digit 0)
  cifar10: the binary version, `cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin`
  synthetic, synthetic-rgb: generated, deterministic, learnable (for tests)
Missing or corrupt files raise `UserInputError` naming the file (or the places looked in)
and how to get the data.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memory_models.usererror import UserInputError

__all__ = ["DATASETS", "Dataset", "load_dataset", "read_idx", "ENV_VAR", "dataset_info"]

DATASETS = ("fashion-mnist", "mnist", "svhn", "cifar10", "synthetic", "synthetic-rgb")
ENV_VAR = "MCELSIM_DATA"
SPLITS = ("train", "test")

# name -> (channels, size, classes, mean per channel, std per channel). Normalization
# constants are the usual training-set statistics (fixed, so subsets normalize alike).
_INFO = {
    "fashion-mnist": (1, 28, 10, [0.2860], [0.3530]),
    "mnist": (1, 28, 10, [0.1307], [0.3081]),
    "svhn": (3, 32, 10, [0.4377, 0.4438, 0.4728], [0.1980, 0.2010, 0.1970]),
    "cifar10": (3, 32, 10, [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
    "synthetic": (1, 28, 10, [0.5], [0.3]),
    "synthetic-rgb": (3, 32, 10, [0.5, 0.5, 0.5], [0.3, 0.3, 0.3]),
}
_HOW_TO_GET = {
    "fashion-mnist": "apt-get install dataset-fashion-mnist (files go to "
    "/usr/share/datasets/fashion-mnist), or put the 4 IDX files in --data-dir / $MCELSIM_DATA",
    "mnist": "put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz in --data-dir / $MCELSIM_DATA",
    "svhn": "put train_32x32.mat and test_32x32.mat (ufldl.stanford.edu/housenumbers) in "
    "--data-dir / $MCELSIM_DATA",
    "cifar10": "unpack cifar-10-binary.tar.gz (the binary version) into --data-dir / "
    "$MCELSIM_DATA",
}
SYNTHETIC_SIZES = {"train": 4096, "test": 1024}


@dataclass(frozen=True)
class Dataset:
    """A labelled image set: images float32 [N, C, H, W] in [0, 1], labels int64 [N]."""

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    mean: list[float]
    std: list[float]
    num_classes: int
    source: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(int(d) for d in self.images.shape[1:])


def dataset_info(name: str) -> dict:
    """Shape, classes and normalization of `name` without loading it."""
    _check_name(name)
    c, s, k, mean, std = _INFO[name]
    return {"in_channels": c, "input_size": s, "num_classes": k, "mean": mean, "std": std}


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise UserInputError("dataset", "name", f"unknown dataset {name!r}",
                             f"use one of {', '.join(DATASETS)}")  # fmt: skip


def _search_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    dirs: list[Path] = []
    for base in (data_dir, os.environ.get(ENV_VAR) or None):
        if base is not None:
            dirs += [Path(base), Path(base) / name]
    dirs.append(Path("/usr/share/datasets") / name)
    if name == "cifar10":
        dirs += [d / "cifar-10-batches-bin" for d in dirs]
    return dirs


def _find(name: str, files: list[str], data_dir) -> list[Path]:
    """Paths of `files` (each also tried with .gz for IDX) in the first dir holding all."""
    dirs = _search_dirs(name, data_dir)
    for d in dirs:
        found = []
        for f in files:
            cands = [d / f, d / (f + ".gz")] if name in ("fashion-mnist", "mnist") else [d / f]
            hit = next((c for c in cands if c.is_file()), None)
            if hit is None:
                break
            found.append(hit)
        else:
            return found
    looked = ", ".join(dict.fromkeys(str(d) for d in dirs))
    raise UserInputError(
        f"dataset {name}", "files", f"{', '.join(files)} not found (looked in {looked})",
        _HOW_TO_GET[name],
    )  # fmt: skip


def read_idx(path: str | os.PathLike, expect_dims: int) -> np.ndarray:
    """Read an IDX file (gzip or raw) of unsigned bytes; checks magic, dims and size."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise UserInputError(path, None, f"cannot read IDX file ({err})",
                             "re-download or reinstall the dataset") from err  # fmt: skip
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserInputError(path, "magic", "not an unsigned-byte IDX file",
                             "re-download or reinstall the dataset")  # fmt: skip
    ndim = data[3]
    if ndim != expect_dims:
        raise UserInputError(path, "magic", f"{ndim} dimensions, expected {expect_dims}",
                             "check that images and labels files are not swapped")  # fmt: skip
    hdr = 4 + 4 * ndim
    if len(data) < hdr:
        raise UserInputError(path, "header", "file is truncated", "re-download the dataset")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    n = int(np.prod(dims, dtype=np.int64))
    if len(data) - hdr != n:
        raise UserInputError(
            path, "size", f"header says {dims} ({n} bytes) but {len(data) - hdr} bytes follow",
            "the file is truncated or corrupt; re-download the dataset",
        )  # fmt: skip
    return np.frombuffer(data, dtype=np.uint8, offset=hdr).reshape(dims)


def _load_idx(name: str, split: str, data_dir) -> tuple[np.ndarray, np.ndarray, str]:
    stem = "train" if split == "train" else "t10k"
    img_path, lbl_path = _find(
        name, [f"{stem}-images-idx3-ubyte", f"{stem}-labels-idx1-ubyte"], data_dir
    )
    images = read_idx(img_path, 3)
    labels = read_idx(lbl_path, 1)
    if images.shape[0] != labels.shape[0]:
        raise UserInputError(lbl_path, "size", f"{labels.shape[0]} labels for "
                             f"{images.shape[0]} images in {img_path}",
                             "use matching image and label files")  # fmt: skip
    if images.shape[1:] != (28, 28):
        raise UserInputError(img_path, "size", f"images are {images.shape[1:]}, expected 28x28",
                             "re-download the dataset")  # fmt: skip
    if labels.size and labels.max() >= 10:
        raise UserInputError(lbl_path, "labels", f"label {labels.max()} outside 0..9",
                             "re-download the dataset")  # fmt: skip
    return images[:, None], labels, str(img_path.parent)


def _load_svhn(split: str, data_dir) -> tuple[np.ndarray, np.ndarray, str]:
    (path,) = _find("svhn", [f"{split}_32x32.mat"], data_dir)
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
        x, y = mat["X"], mat["y"]
    except Exception as err:  # scipy raises several types for a corrupt .mat
        raise UserInputError(path, None, f"cannot read SVHN .mat file ({err})",
                             "re-download the dataset") from err  # fmt: skip
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.reshape(-1).shape[0] != x.shape[3]:
        raise UserInputError(path, "X", f"unexpected shapes X{x.shape} y{y.shape}",
                             "use the format-2 cropped digits files")  # fmt: skip
    labels = y.reshape(-1).astype(np.int64)
    labels[labels == 10] = 0  # SVHN stores digit 0 as label 10
    if labels.min() < 0 or labels.max() > 9:
        raise UserInputError(path, "y", "labels outside 1..10", "re-download the dataset")
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels, str(path.parent)


def _load_cifar10(split: str, data_dir) -> tuple[np.ndarray, np.ndarray, str]:
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    paths = _find("cifar10", names, data_dir)
    rec = 1 + 3 * 32 * 32  # one label byte, then 1024 R, 1024 G, 1024 B bytes
    images, labels = [], []
    for p in paths:
        raw = np.fromfile(p, dtype=np.uint8)
        if raw.size == 0 or raw.size % rec:
            raise UserInputError(p, "size", f"{raw.size} bytes is not a multiple of {rec}",
                                 "use the binary version, re-download it")  # fmt: skip
        raw = raw.reshape(-1, rec)
        if raw[:, 0].max() > 9:
            raise UserInputError(p, "labels", "label byte outside 0..9",
                                 "use the CIFAR-10 binary version (not CIFAR-100)")  # fmt: skip
        labels.append(raw[:, 0].astype(np.int64))
        images.append(raw[:, 1:].reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels), str(paths[0].parent)


def _synthetic(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Class prototypes (smooth random patterns, seed 0) plus per-image noise and shifts.

    Deterministic: train and test use different fixed seeds. Learnable by every zoo model.
    """
    c, s, k, _, _ = _INFO[name]
    proto_rng = np.random.default_rng(np.random.SeedSequence([0, 12345]))
    coarse = proto_rng.random((k, c, 7, 7))
    protos = np.kron(coarse, np.ones((1, 1, s // 7 + 1, s // 7 + 1)))[:, :, :s, :s]
    n = SYNTHETIC_SIZES[split]
    rng = np.random.default_rng(np.random.SeedSequence([1 if split == "train" else 2, 12345]))
    labels = rng.integers(0, k, size=n).astype(np.int64)
    contrast = rng.uniform(0.6, 1.0, size=(n, 1, 1, 1))
    noise = rng.normal(0.0, 0.25, size=(n, c, s, s))
    x = 0.5 + contrast * (protos[labels] - 0.5) + noise
    return np.clip(x, 0.0, 1.0).astype(np.float32), labels


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
) -> Dataset:
    """Load `split` ("train" | "test") of `name` (one of DATASETS); `limit` keeps the first N.

    images: float32 [N, C, H, W] in [0, 1]; labels: int64 [N] in 0..num_classes-1.
    """
    _check_name(name)
    if split not in SPLITS:
        raise UserInputError("dataset", "split", f"unknown split {split!r}", "use train or test")
    if limit is not None and (int(limit) != limit or limit < 1):
        raise UserInputError("dataset", "limit", f"must be a positive integer, got {limit!r}",
                             "pass --limit N with N >= 1")  # fmt: skip
    c, s, k, mean, std = _INFO[name]
    source = "generated"
    if name in ("synthetic", "synthetic-rgb"):
        images, labels = _synthetic(name, split)
    else:
        if name in ("fashion-mnist", "mnist"):
            raw, labels, source = _load_idx(name, split, data_dir)
        elif name == "svhn":
            raw, labels, source = _load_svhn(split, data_dir)
        else:
            raw, labels, source = _load_cifar10(split, data_dir)
        if limit is not None:
            raw, labels = raw[:limit], labels[:limit]
        images = raw.astype(np.float32) / np.float32(255.0)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return Dataset(
        name=name, split=split, images=np.ascontiguousarray(images),
        labels=np.ascontiguousarray(labels, dtype=np.int64), mean=list(mean), std=list(std),
        num_classes=k, source=source,
    )  # fmt: skip
