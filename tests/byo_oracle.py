"""onnxruntime as an independent oracle: the same QDQ file run by its kernels and by
mcelsim, compared on every quantized activation and on the logits."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from simulator.network import IntegerNetwork
from simulator.onnx_import import onnx_model
from simulator.ops import Conv, Linear, MaxPool, Requantize


def ort_session(path, extra_outputs=(), level=None) -> ort.InferenceSession:
    """One-thread CPU session at graph optimization `level` (default: all, which fuses QDQ
    into onnxruntime's integer kernels)."""
    model = onnx.load(str(path))
    for name in extra_outputs:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    if level is not None:
        opts.graph_optimization_level = level
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])  # fmt: skip


def activation_dq_outputs(path) -> list[str]:
    """Outputs of the DequantizeLinear nodes of activations (not weights), in graph order."""
    g = onnx.load(str(path)).graph
    consts = {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant"
                                                for o in n.output}  # fmt: skip
    producer = {o: n for n in g.node for o in n.output}
    names = []
    for n in g.node:
        if n.op_type != "DequantizeLinear" or n.input[0] in consts:
            continue
        q = producer.get(n.input[0])
        if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in consts:
            names.append(n.output[0])
    return names


def _quantizer_points(net: IntegerNetwork, quant_modules: set[str]) -> list[tuple[int, float]]:
    """(index into the value list, scale) of each quantizer, in graph order: the input (0),
    then each requantizing op's output (value i + 1 of op i), taken after the pooling the
    importer moved before the quantizer (MaxPool ops named after a quantizer module)."""
    points = [(0, net.input_spec.scale)]
    for i, op in enumerate(net.ops[:-1]):
        if isinstance(op, Conv | Linear | Requantize):
            j = i + 1
            while (j < len(net.ops) and isinstance(net.ops[j], MaxPool)
                   and net.ops[j].module in quant_modules):  # fmt: skip
                j += 1
            points.append((j, net.ops[j - 1].scale))
    return points


def quantized_values(net: IntegerNetwork, x: np.ndarray, quant_modules: set[str],
                     forced: list[np.ndarray] | None = None):  # fmt: skip
    """mcelsim's (codes, scale) of each quantizer, in graph order. With `forced` (codes per
    quantizer, e.g. onnxruntime's), every op after a quantizer reads the forced codes instead
    of mcelsim's own: each layer is then compared on the same inputs, so a difference at one
    layer does not propagate to the next."""
    points = _quantizer_points(net, quant_modules)
    slot = {j: k for k, (j, _) in enumerate(points)}
    vals = [net.quantize_input(x)]
    ours = [vals[0]]
    for i, op in enumerate(net.ops):
        v = net.run_op(i, [vals[j] for j in op.src])
        k = slot.get(i + 1)
        if k is not None:
            ours.append(v)
            if forced is not None:
                v = np.rint(forced[k]).reshape(v.shape).astype(v.dtype)
        vals.append(v)
    return [(v, scale) for v, (_, scale) in zip(ours, points, strict=True)]


def compare(net: IntegerNetwork, path, x: np.ndarray, level=None) -> dict:
    """Codes of every quantized activation and the logits, mcelsim vs onnxruntime."""
    names = activation_dq_outputs(path)
    sess = ort_session(path, names, level)
    got = sess.run(None, {sess.get_inputs()[0].name: x})
    logits_ort, acts = got[0], got[1:]
    graph = onnx_model(path).graph
    quant = {"layers." + n["name"].replace(".", "_") for n in graph["nodes"] if n["op"] == "quant"}
    ours = quantized_values(net, x, quant)
    assert len(ours) == len(acts), (len(ours), len(acts))
    diffs = [np.abs(np.rint(a / scale) - v.reshape(a.shape))
             for (v, scale), a in zip(ours, acts, strict=True)]  # fmt: skip
    forced = quantized_values(net, x, quant, [a / scale for a, (_, scale)
                                              in zip(acts, ours, strict=True)])  # fmt: skip
    forced_diffs = [np.abs(np.rint(a / scale) - v.reshape(a.shape))
                    for (v, scale), a in zip(forced, acts, strict=True)]  # fmt: skip
    logits = net.forward(ours[0][0])
    last = net.ops[-1]
    step = float(np.max(np.abs(last.requant.mult / 2.0**last.requant.shift))) * net.logit_scale
    return {
        "argmax": float(np.mean(logits.argmax(1) == logits_ort.argmax(1))),
        "codes_equal": [float(np.mean(d == 0)) for d in diffs],
        "codes_max_diff": [int(d.max()) for d in diffs],
        # each layer on onnxruntime's own input codes (no propagation of earlier flips)
        "layer_codes_equal": [float(np.mean(d == 0)) for d in forced_diffs],
        "layer_codes_max_diff": [int(d.max()) for d in forced_diffs],
        "logit_step": step,
        "logits_within_step": float(np.mean(np.all(
            np.abs(logits * net.logit_scale - logits_ort) <= 1.01 * step + 1e-7, axis=1))),
    }  # fmt: skip
