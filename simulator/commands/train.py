"""`mcelsim train`: quantization-aware training (CE, MCEL, MHL, injected bit errors).

Parses options into `models.training.TrainConfig` and calls `models.training.train`; rerunning
the same command after an interruption continues from `<out>.partial`.
"""

from __future__ import annotations

import argparse
import json
import sys

from simulator.options import float_in, int_in

# Spelled out here so that `--help` needs no torch import (a test keeps them equal to
# models.datasets.DATASETS and models.zoo.ARCHITECTURES).
DATASETS = ("fashion-mnist", "mnist", "svhn", "cifar10", "synthetic", "synthetic-rgb")
ARCHITECTURES = ("mlp", "vgg3", "vgg7", "resnet18", "mobilenetv2")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a quantized network (CE, MCEL, MHL, error injection)",
        description=__doc__.splitlines()[0],
    )
    # Choices are spelled out here so that `--help` needs no torch import.
    p.add_argument("--dataset", default="fashion-mnist", choices=DATASETS,
                   help="fashion-mnist, mnist, svhn, cifar10, synthetic, synthetic-rgb")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files "
                   "(also $MCELSIM_DATA; default: /usr/share/datasets/<name>)")
    p.add_argument("--arch", default="vgg3", choices=ARCHITECTURES,
                   help="mlp, vgg3, vgg7, resnet18, mobilenetv2")
    p.add_argument("--weight-bits", type=int_in(1, 8), default=4, help="1 (binarized), 2, 4, 8 ...")
    p.add_argument("--act-bits", type=int_in(1, 16), default=8, help="1 .. 16")
    p.add_argument("--input-bits", type=int_in(1, 16), default=8, help="1 .. 16")
    p.add_argument("--granularity", default="channel", choices=("channel", "tensor"),
                   help="weight scale per output channel or per tensor")
    p.add_argument("--width", type=float_in(0, 64, low_open=True), default=1.0,
                   help="channel width multiplier, (0, 64]")
    p.add_argument("--no-logit-scale", dest="logit_scale", action="store_false",
                   help="no learnable scale on the logits (ablation)")
    p.add_argument("--loss", default="ce", choices=("ce", "mcel", "mhl"))
    p.add_argument("--margin", type=float_in(0), default=32.0, help="MCEL margin m (logits)")
    p.add_argument("--logit-bound", type=float_in(0, low_open=True), default=100.0,
                   help="MCEL logit bound L")
    p.add_argument("--mhl-b", type=float_in(0, low_open=True), default=128.0, help="MHL margin b")
    p.add_argument("--inject-ber", type=float_in(0, 0.5), default=0.0,
                   help="per-bit flip probability injected into the weights while training")
    p.add_argument("--inject-encoding", default="offset-binary",
                   choices=("offset-binary", "twos-complement", "sign-magnitude"),
                   help="how weight codes are stored for --inject-ber (1-bit weights: binary)")
    p.add_argument("--epochs", type=int_in(1, 100_000), default=10)
    p.add_argument("--batch-size", type=int_in(2, 1_000_000), default=128)
    p.add_argument("--lr", type=float_in(0, low_open=True), default=1e-3)
    p.add_argument("--weight-decay", type=float_in(0), default=0.0)
    p.add_argument("--schedule", default="cosine", choices=("cosine", "step", "none"))
    p.add_argument("--seed", type=int_in(0, 2**63 - 1), default=0)
    p.add_argument("--limit", type=int_in(1), default=None, help="train on the first N images")
    p.add_argument("--test-limit", type=int_in(1), default=None, help="test on the first N images")
    p.add_argument("--threads", type=int_in(1, 4096), default=None,
                   help="torch threads (default: all)")
    p.add_argument("--out", required=True, help="checkpoint to write (.ckpt, safetensors)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from memory_models.usererror import check_output_file
    from models.training import TrainConfig, partial_path, train

    check_output_file(args.out, "--out", create_folders=True)  # before hours of training

    config = TrainConfig(
        dataset=args.dataset, arch=args.arch, weight_bits=args.weight_bits,
        act_bits=args.act_bits, input_bits=args.input_bits, granularity=args.granularity,
        width=args.width, logit_scale=args.logit_scale, loss=args.loss, margin=args.margin,
        logit_bound=args.logit_bound,
        mhl_b=args.mhl_b, inject_ber=args.inject_ber, inject_encoding=args.inject_encoding,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, schedule=args.schedule, seed=args.seed,
        limit=args.limit, test_limit=args.test_limit, data_dir=args.data_dir,
        threads=args.threads,
    )  # fmt: skip
    if partial_path(args.out).exists() and not args.json:
        sys.stderr.write(f"mcelsim train: continuing from {partial_path(args.out)}\n")
    _, meta = train(config, out=args.out, progress=not args.no_progress)
    m = meta["metrics"]
    if args.json:
        result = {"checkpoint": str(args.out), "test_accuracy": m["test_accuracy"],
                  "mean_logit_margin": m["mean_logit_margin"], "test_size": m["test_size"],
                  "train_seconds": meta["train_seconds"], "epochs": len(meta["history"]),
                  "config": meta["train"]}  # fmt: skip
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write(
            f"{args.out}: clean test accuracy {100 * m['test_accuracy']:.2f} % "
            f"({m['test_size']} images), mean logit margin {m['mean_logit_margin']:.3f}, "
            f"{meta['train_seconds']:.0f} s training\n"
        )
    return 0
