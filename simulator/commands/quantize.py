"""`mcelsim quantize`: bring your own network -> an ordinary mcelsim checkpoint.

Examples:
  mcelsim quantize --model models.tv_arch:resnet18 --weights resnet18.safetensors \\
      --dataset fashion-mnist --calib 1000 --weight-bits 4 --out resnet18-ptq.ckpt
  mcelsim quantize --onnx model.onnx --dataset fashion-mnist --out model.ckpt

--model names an importable factory (`package.module:function`, called with the JSON
--model-args); its weights come only from safetensors or a state dict read with
torch.load(weights_only=True), never from a pickle. The float model takes float32 NCHW
images in [0, 1]. The checkpoint works with `simulate`, `report` and the rest unchanged.
Prints what the import did per layer (bits, weight scales, folded BatchNorm, accumulator
width, weights clipped).
"""

from __future__ import annotations

import argparse
import json
import sys

from simulator.options import int_in


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "quantize",
        help="post-training quantization of a float PyTorch model, or ONNX QDQ import, "
        "into a checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("the network (one of --model, --onnx)")
    src.add_argument("--model", metavar="PKG.MODULE:FACTORY", help="float model factory")
    src.add_argument("--model-args", default="{}", metavar="JSON",
                     help='keyword arguments of the factory, e.g. \'{"width": 16}\'')
    src.add_argument("--weights", metavar="FILE", help="state dict: .safetensors, or .pt/.pth "
                     "read with weights_only=True (default: the factory's own weights)")
    src.add_argument("--onnx", metavar="MODEL.onnx", help="QuantizeLinear/DequantizeLinear "
                     "graph to import instead of --model")
    q = p.add_argument_group("post-training quantization")
    q.add_argument("--dataset", default="fashion-mnist", help="calibration and test data")
    q.add_argument("--data-dir", help="where the dataset files are")
    q.add_argument("--calib", type=int_in(1, 60_000), default=1000, metavar="N",
                   help="calibration images: the first N of the training split (default 1000)")
    q.add_argument("--weight-bits", type=int_in(2, 8), default=4, help="2..8 (default 4)")
    q.add_argument("--act-bits", type=int_in(2, 16), default=8, help="2..16 (default 8)")
    q.add_argument("--input-bits", type=int_in(2, 16), default=8, help="2..16 (default 8)")
    q.add_argument("--granularity", default="channel", choices=("channel", "tensor"))
    q.add_argument("--observer", default="minmax", choices=("minmax", "percentile"))
    p.add_argument("--out", required=True, help="checkpoint to write (.ckpt, safetensors)")
    p.add_argument("--json", action="store_true", help="print the import report as JSON")
    p.set_defaults(run=run)


def load_float_model(spec: str, model_args: str, weights: str | None):
    """The user's float nn.Module from `pkg.module:factory` and an optional state dict."""
    import importlib

    from memory_models.usererror import UserInputError

    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise UserInputError("--model", spec, "not of the form package.module:factory",
                             "e.g. --model models.tv_arch:resnet18")  # fmt: skip
    try:
        kwargs = json.loads(model_args)
    except ValueError as err:
        raise UserInputError("--model-args", model_args, "not valid JSON",
                             'write e.g. \'{"width": 16}\'') from err  # fmt: skip
    if not isinstance(kwargs, dict):
        raise UserInputError("--model-args", model_args, "must be a JSON object",
                             'write e.g. \'{"width": 16}\'')
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as err:
        raise UserInputError("--model", spec, f"cannot import it ({err})",
                             "check the name and that its package is on PYTHONPATH") from err
    try:
        model = factory(**kwargs)
    except TypeError as err:
        raise UserInputError("--model-args", model_args, f"the factory rejects them ({err})",
                             "pass the factory's own keyword arguments") from err  # fmt: skip
    if weights:
        _load_weights(model, weights)
    return model.eval()


def _load_weights(model, path: str) -> None:
    import os

    import torch

    from memory_models.usererror import UserInputError

    if not os.path.isfile(path):
        raise UserInputError(path, None, "weights file not found", "check --weights")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors / torch raise their own types for bad files
        raise UserInputError(path, None, f"not a readable state dict ({err})",
                             "save it with safetensors.torch.save_file or torch.save("
                             "model.state_dict())") from err  # fmt: skip
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()
        raise UserInputError(path, None, "tensors do not match the model: "
                             f"{' '.join(first[:3])[:300]}", "pass the factory arguments the "
                             "weights were trained with (--model-args)") from err  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from memory_models.usererror import UserInputError, check_output_file
    from models.checkpoint import save_checkpoint
    from simulator.import_report import format_report, layer_report
    from simulator.importer import import_torch

    if (args.model is None) == (args.onnx is None):
        raise UserInputError("quantize", None, "give exactly one of --model, --onnx",
                             "e.g. --model models.tv_arch:resnet18")  # fmt: skip
    check_output_file(args.out, "--out")  # before calibration and import
    meta = {"dataset": {"name": args.dataset}}
    if args.onnx:
        from simulator.onnx_import import onnx_model

        qmodel = onnx_model(args.onnx)
        meta["source"] = {"onnx": args.onnx}
    else:
        from models.datasets import load_dataset
        from simulator.ptq import quantize_model

        model = load_float_model(args.model, args.model_args, args.weights)
        calib = load_dataset(args.dataset, split="train", data_dir=args.data_dir,
                             limit=args.calib)  # fmt: skip
        qmodel = quantize_model(model, calib.images, args.weight_bits, args.act_bits,
                                args.granularity, args.observer, args.input_bits,
                                num_classes=calib.num_classes)  # fmt: skip
        meta["source"] = {"model": args.model, "model_args": json.loads(args.model_args),
                          "weights": args.weights, "calib": args.calib,
                          "observer": args.observer}  # fmt: skip
    net = import_torch(qmodel, meta={"input_shape": qmodel.graph["input_shape"]},
                       source=args.onnx or args.model)  # fmt: skip
    rows = layer_report(qmodel, net)
    meta["import_report"] = rows
    save_checkpoint(args.out, qmodel, meta)
    if args.json:
        sys.stdout.write(json.dumps({"out": args.out, "layers": rows}, indent=1) + "\n")
    else:
        sys.stdout.write(format_report(rows))
        sys.stdout.write(f"wrote {args.out}\n")
    return 0
