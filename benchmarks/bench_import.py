"""Bring your own network: import time per model and agreement with onnxruntime.

    .venv/bin/python benchmarks/bench_import.py            # print the table
    .venv/bin/python benchmarks/bench_import.py --write    # also write results_import.md

Models (Fashion-MNIST, trained here for one epoch on the first 5 000 / 2 000 images, 2
torch threads): the zoo's 4-bit VGG3 (width 1/4) and ResNet-18 (width 1/8) exported to
ONNX QDQ (models.onnx_export) and read back with simulator.import_onnx; a float VGG3 and
the torchvision-structured ResNet-18 (width 16) / MobileNetV2 (width 0.25) quantized after
training (simulator.quantize, 4-bit weights, 8-bit activations, 1 000 calibration
images); a 4-bit Brevitas network (simulator.import_brevitas).
Import time: seconds for the import call (PTQ: tracing, calibration, quantization and the
lowering), best of 3. onnxruntime columns: argmax agreement over the test images, the
smallest per-quantizer fraction of identical activation codes, the largest code
difference; zoo exports at ORT_ENABLE_BASIC (float Conv on dequantized values), PTQ
exports (int32 biases) at the default level, where onnxruntime fuses them into its integer
QLinearConv / QGemm kernels.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from byo_oracle import compare  # noqa: E402
from test_byo_brevitas import _brevitas_net, _ready  # noqa: E402
from test_byo_onnx import FloatVGG3  # noqa: E402

from models import build_model  # noqa: E402
from models.datasets import load_dataset  # noqa: E402
from models.onnx_export import export_onnx, quantize_biases  # noqa: E402
from models.tv_arch import mobilenet_v2, resnet18  # noqa: E402
from simulator import import_brevitas, import_onnx, quantize  # noqa: E402
from simulator.ptq import quantize_model  # noqa: E402

OUT = Path(__file__).with_name("results_import.md")


def _train(model, n):
    torch.manual_seed(0)
    train = load_dataset("fashion-mnist", "train", limit=n)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    model.train()
    for s in range(0, n, 200):
        opt.zero_grad()
        F.cross_entropy(model(x[s : s + 200]), y[s : s + 200]).backward()
        opt.step()
    return model.eval()


def _best(fn, repeats=3):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _accuracy(net, test):
    return float(np.mean(net.forward(net.quantize_input(test.images)).argmax(1) == test.labels))


def run(n_test: int) -> list[dict]:
    torch.set_num_threads(2)
    test = load_dataset("fashion-mnist", "test", limit=n_test)
    calib = load_dataset("fashion-mnist", "train", limit=1000).images
    stats = load_dataset("fashion-mnist", "train", limit=10)
    tmp = Path(tempfile.mkdtemp())
    rows = []
    for name, arch, width, n in [("zoo VGG3 -> ONNX", "vgg3", 0.25, 5000),
                                 ("zoo ResNet-18 -> ONNX", "resnet18", 0.125, 2000)]:  # fmt: skip
        torch.manual_seed(0)
        model = _train(build_model(arch, width=width, weight_bits=4, mean=stats.mean,
                                   std=stats.std), n)  # fmt: skip
        path = tmp / f"{arch}.onnx"
        export_onnx(model, path, (1, 28, 28))
        secs, net = _best(lambda p=path: import_onnx(p))
        r = compare(net, path, test.images, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
        rows.append({"model": name, "import_s": secs, "accuracy": _accuracy(net, test), **r})
    for name, factory in [("float VGG3 (PTQ)", FloatVGG3),
                          ("ResNet-18 tv (PTQ)", lambda: resnet18(width=16)),
                          ("MobileNetV2 tv (PTQ)", lambda: mobilenet_v2(width_mult=0.25))]:
        torch.manual_seed(0)
        model = _train(factory(), 5000 if "VGG" in name else 2000)
        secs, net = _best(lambda m=model: quantize(m, calib, weight_bits=4, act_bits=8))
        qmodel = quantize_model(model, calib, weight_bits=4, act_bits=8)
        path = tmp / "ptq.onnx"
        export_onnx(qmodel, path, (1, 28, 28))
        quantize_biases(path)
        from_onnx = import_onnx(path)
        r = compare(from_onnx, path, test.images)
        with torch.no_grad():
            fq = qmodel(torch.from_numpy(test.images)).numpy()
        rows.append({"model": name, "import_s": secs, "accuracy": _accuracy(net, test),
                     "fake_quant_accuracy": float(np.mean(fq.argmax(1) == test.labels)),
                     **r})  # fmt: skip
    model = _ready(_brevitas_net())
    secs, net = _best(lambda: import_brevitas(model, (1, 28, 28)))
    with torch.no_grad():
        ref = model(torch.from_numpy(test.images)).numpy()
    logits = net.forward(net.quantize_input(test.images))
    rows.append({"model": "Brevitas 4-bit (untrained)", "import_s": secs,
                 "brevitas_argmax": float(np.mean(logits.argmax(1) == ref.argmax(1)))})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | import (s) | int accuracy | fake-quant acc. | argmax = onnxruntime | "
             "min. codes equal | max. code diff |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        eq = f"{min(r['codes_equal']):.4%}" if "codes_equal" in r else "-"
        md = str(max(r["codes_max_diff"])) if "codes_max_diff" in r else "-"
        am = r.get("argmax", r.get("brevitas_argmax"))
        acc = f"{r['accuracy']:.4f}" if "accuracy" in r else "-"
        fq = f"{r['fake_quant_accuracy']:.4f}" if "fake_quant_accuracy" in r else "-"
        lines.append(f"| {r['model']} | {r['import_s']:.2f} | {acc} | {fq} | {am:.4%} | {eq} | "
                     f"{md} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10000, help="test images (default 10 000)")
    ap.add_argument("--write", action="store_true", help="write results_import.md")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = ap.parse_args()
    rows = run(args.images)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines()
                       if ln.startswith("Model name")), platform.processor())  # fmt: skip
    text = (f"# Import time and onnxruntime agreement\n\nCPU: {model_name}; torch "
            f"{torch.__version__}, onnxruntime {ort.__version__}; {args.images} test images. "
            f"Regenerate: `.venv/bin/python benchmarks/bench_import.py --write`.\n\n"
            + table(rows))  # fmt: skip
    sys.stdout.write(text)
    if args.write:
        OUT.write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
