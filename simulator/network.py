"""IntegerNetwork: a quantized network computed with exact integer arithmetic.

What the hardware computes, not a dequantized float model. Built by
`simulator.importer.import_torch` / `import_checkpoint` from a PyTorch QAT model
(`models.quant` is the contract); no torch is needed to run it.

Ops (IR in `simulator.ops`, numba kernels in `simulator.kernels`, numpy reference in
`simulator.reference`):
  conv2d    codes * int8/int16 weights (any groups, stride, padding), int32 or int64
            accumulator, + int32 bias, requantized per output channel; an optional max
            pooling is fused and pools the output codes (max for channels whose
            requantization increases, min where it decreases: f(max a) = min f(a)).
  linear    the same for [N, F] inputs; binarized layers (1-bit weights and ±1 inputs) use
            XNOR-popcount on 64-bit words: sum x*w = F - 2 * popcount(x XOR w).
  requantize  per-channel requantization of an integer value (after add or sum pooling).
  maxpool   max/min pooling of codes; padding never wins.
  sumpool   average / global average pooling as an exact integer window sum; the 1/size
            factor is folded into the next requantization (an exact rational scale).
  add       residual add of two codes with the same scale (integer sum).
  flatten   NCHW -> [N, C*H*W].
Activations: clamp activations (ReLU, ReLU6, Hardtanh), BatchNorm, bias and LogitScale
between a layer and its QuantAct are folded into the requantization, so they cost nothing.
1-bit QuantAct (sign) becomes a threshold: +1 iff acc >= t (or <= t when decreasing).

Accumulators: int32 where the worst case |w|max * |x|max * fan_in < 2^31, with |w|max over
the whole b-bit range (2^(b-1), a flipped bit can create -2^(b-1)) and |x|max over the
input value's proven range; int64 otherwise. The decision is made at import
(`ops.acc_dtype_for`), so no weight corruption can overflow. The bias is added in int64.

Requantization (gemmlowp/TFLite style, int64): code = clamp(((acc + bias) * M + B) >> s,
lo, hi) per channel, M = round(m * 2^s), B = round(b * 2^s) + 2^(s-1): rounding half up
(toward +inf) of m * acc + b, where m, b fold weight scale * input scale, BatchNorm, bias
terms, LogitScale and 1 / activation scale. s is the largest shift keeping every product
inside 2^60. Saturation: clamp to the QuantAct range (and to ReLU/Hardtanh bounds).

Logits: int32 [N, classes]. The last layer's accumulators are requantized to one common
output scale `logit_scale` (float logit units per integer step), chosen no coarser than the
finest class's accumulator step, so argmax over int logits equals argmax over float logits
up to one step; margins in float units are int margins * logit_scale.

Engines: `forward` runs the numba kernels in parallel over images (prange over image
chunks, each writing its own slice; results do not depend on batch size or thread count);
`reference_forward` runs the numpy reference; both give identical integers.

Sessions (`net.session(x)`, `simulator.session`): the clean activations of a test set,
cached, for exact corrupted passes that recompute only what a read changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from simulator import engine
from simulator.ops import Conv, Linear, Op, code_dtype, weight_range

__all__ = ["IntegerNetwork", "InputSpec"]

DEFAULT_BATCH = 1024


@dataclass(frozen=True, eq=False)
class InputSpec:
    """The model's own input normalization and quantization (InputQuant).

    q = clamp(rint(((image - mean[c]) / std[c]) * (1 / scale)), qmin, qmax), computed in
    float32 like torch.fake_quantize_per_tensor_affine (rint = half to even).
    flatten: the model flattens the images before InputQuant (MLP); 2-D inputs then use
    channel 0's mean and std, as `InputQuant.normalize` does.
    """

    mean: np.ndarray  # float32 [C]
    std: np.ndarray  # float32 [C]
    scale: float
    qmin: int
    qmax: int
    flatten: bool = False


@dataclass(eq=False)
class IntegerNetwork:
    """An imported integer network (see the module docstring). Build with the importer."""

    ops: list[Op]
    input_spec: InputSpec
    _weights: dict[str, np.ndarray]
    _biases: dict[str, np.ndarray]
    _bits: dict[str, int]
    logit_scale: float
    num_classes: int
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for arr in list(self._weights.values()) + list(self._biases.values()):
            arr.flags.writeable = False
        self._layer_of = {}  # weight or bias name -> op index
        for i, op in enumerate(self.ops):
            if isinstance(op, Conv | Linear):
                self._layer_of[op.weight] = i
                if op.bias is not None:
                    self._layer_of[op.bias] = i
        self._last_use = _last_uses(self.ops)

    # ----------------------------------------------------------------- weights
    @property
    def weight_names(self) -> list[str]:
        """Weight tensor names in storage (layer) order."""
        return [op.weight for op in self.ops if isinstance(op, Conv | Linear)]

    def weights(self) -> dict[str, np.ndarray]:
        """Signed integer weight codes (int8 or int16, read-only), in layer order."""
        return {name: self._weights[name] for name in self.weight_names}

    def weight_bits(self, name: str) -> int:
        """Bits per stored weight code of tensor `name` (1 = binarized ±1)."""
        return self._bits[name]

    def biases(self) -> dict[str, np.ndarray]:
        """int32 biases at accumulator scale (s_w[c] * s_in), for the layers that have one."""
        return dict(self._biases)

    def with_weights(
        self,
        updates: Mapping[str, np.ndarray],
        biases: Mapping[str, np.ndarray] | None = None,
    ) -> IntegerNetwork:
        """A network sharing everything except the replaced weight / bias arrays.

        Values must fit the layer's bits (b-bit two's complement range; {-1, +1} for 1 bit)
        and biases int32, else ValueError.
        """
        weights = dict(self._weights)
        for name, arr in updates.items():
            weights[name] = self._checked_weight(name, arr)
        new_biases = dict(self._biases)
        for name, arr in (biases or {}).items():
            new_biases[name] = self._checked_bias(name, arr)
        return IntegerNetwork(
            self.ops, self.input_spec, weights, new_biases, self._bits,
            self.logit_scale, self.num_classes, self.meta,
        )  # fmt: skip

    def _checked_weight(self, name: str, arr: np.ndarray) -> np.ndarray:
        if name not in self._weights:
            raise ValueError(f"unknown weight {name!r}; known: {self.weight_names}")
        old = self._weights[name]
        arr = np.asarray(arr)
        if arr.shape != old.shape:
            raise ValueError(f"weight {name!r}: shape {arr.shape}, expected {old.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"weight {name!r}: integer codes expected, got {arr.dtype}")
        bits = self._bits[name]
        lo, hi = weight_range(bits)
        if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
            raise ValueError(f"weight {name!r}: values outside the {bits}-bit range [{lo}, {hi}]")
        if bits == 1 and np.any(arr == 0):
            raise ValueError(f"weight {name!r}: binarized weights must be -1 or +1")
        return np.ascontiguousarray(arr, dtype=old.dtype)

    def _checked_bias(self, name: str, arr: np.ndarray) -> np.ndarray:
        if name not in self._biases:
            raise ValueError(f"unknown bias {name!r}; known: {sorted(self._biases)}")
        arr = np.asarray(arr)
        old = self._biases[name]
        if arr.shape != old.shape or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"bias {name!r}: integer array of shape {old.shape} expected")
        info = np.iinfo(np.int32)
        if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
            raise ValueError(f"bias {name!r}: values outside int32")
        return np.ascontiguousarray(arr, dtype=np.int32)

    # ------------------------------------------------------------------- input
    @property
    def input_dtype(self) -> np.dtype:
        return code_dtype(self.input_spec.qmin, self.input_spec.qmax)

    def quantize_input(self, images: np.ndarray) -> np.ndarray:
        """float32 images in [0, 1] (NCHW, or [N, F] for a flat model) -> input codes.

        Exactly the model's InputQuant in float32: (image - mean) / std, times
        float32(1 / scale), rounded half to even, clamped (int8 for 8-bit inputs).
        """
        spec = self.input_spec
        x = np.asarray(images, dtype=np.float32)
        if spec.flatten and x.ndim > 2:
            x = x.reshape(x.shape[0], -1)
        if x.ndim == 2:
            xn = (x - spec.mean[:1].reshape(1, 1)) / spec.std[:1].reshape(1, 1)
        elif x.ndim == 4:
            if x.shape[1] != spec.mean.shape[0]:
                raise ValueError(
                    f"images have {x.shape[1]} channels, the model expects {spec.mean.shape[0]}"
                )
            xn = (x - spec.mean.reshape(1, -1, 1, 1)) / spec.std.reshape(1, -1, 1, 1)
        else:
            raise ValueError(f"images must be NCHW or [N, features], got shape {x.shape}")
        inv = np.float32(1.0) / np.float32(spec.scale)
        q = np.rint(xn.astype(np.float32) * inv)
        q = np.clip(q, spec.qmin, spec.qmax)
        return q.astype(self.input_dtype)

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"input codes must be integers (use quantize_input), got {x.dtype}")
        if x.size and (int(x.min()) < self.input_spec.qmin or int(x.max()) > self.input_spec.qmax):
            raise ValueError(
                f"input codes outside [{self.input_spec.qmin}, {self.input_spec.qmax}]"
            )
        return np.ascontiguousarray(x, dtype=self.input_dtype)

    # ----------------------------------------------------------------- engines
    def forward(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """int32 logits [N, classes] with the numba engine (independent of batch_size)."""
        return self._run(x, batch_size, reference=False)

    def reference_forward(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """The same integers with the plain-numpy reference (slow; for tests)."""
        return self._run(x, batch_size, reference=True)

    def _run(self, x: np.ndarray, batch_size: int | None, reference: bool) -> np.ndarray:
        x = self._check_input(x)
        bs = int(batch_size or DEFAULT_BATCH)
        if bs < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.empty((x.shape[0], self.num_classes), np.int32)
        for start in range(0, x.shape[0], bs):
            values = self.run_values(x[start : start + bs], reference=reference, keep=False)
            out[start : start + bs] = values[-1].reshape(values[-1].shape[0], -1)
        return out

    def value_range(self, v: int) -> tuple[int, int]:
        """Worst-case code range [lo, hi] of value v (0 = the quantized input)."""
        if v == 0:
            return self.input_spec.qmin, self.input_spec.qmax
        op = self.ops[v - 1]
        return op.lo, op.hi

    def layer_input(self, i: int) -> engine.LayerInput:
        """Import facts of Conv/Linear op i for the engine: weight bits, input code range,
        and the backend plan (`engine.plan`, read now so MCELSIM_GEMM changes apply)."""
        op = self.ops[i]
        w = self._weights[op.weight]
        bits = self._bits[op.weight]
        lo, hi = self.value_range(op.src[0])
        fan_in = int(np.prod(w.shape[1:]))
        return engine.LayerInput(bits, lo, hi, engine.plan(op, bits, lo, hi, fan_in))

    def run_op(self, i: int, xs: list[np.ndarray], reference: bool = False,
               chans: np.ndarray | None = None, base: np.ndarray | None = None,
               weights: Mapping[str, np.ndarray] | None = None,
               biases: Mapping[str, np.ndarray] | None = None) -> np.ndarray:  # fmt: skip
        """Output of op i for inputs xs (numba, or numpy with reference=True)."""
        op = self.ops[i]
        weights = self._weights if weights is None else weights
        biases = self._biases if biases is None else biases
        if isinstance(op, Conv | Linear):
            w = weights[op.weight]
            b = biases[op.bias] if op.bias is not None else None
            if reference:
                return engine.run_op_reference(op, xs, w, b)
            run = engine.run_conv if isinstance(op, Conv) else engine.run_linear
            return run(op, xs[0], w, b, chans=chans, base=base, info=self.layer_input(i))
        if reference:
            return engine.run_op_reference(op, xs)
        return engine.run_simple(op, xs)

    def run_values(self, x: np.ndarray, reference: bool = False, keep: bool = True):
        """All values [input, op outputs...] for codes x; keep=False frees dead ones."""
        values: list[np.ndarray | None] = [x]
        for i, op in enumerate(self.ops):
            values.append(self.run_op(i, [values[s] for s in op.src], reference))
            if not keep:
                for s in op.src:
                    if self._last_use[s] == i:
                        values[s] = None
        return values

    def session(self, x: np.ndarray, batch_size: int | None = None):
        """Cache the clean activations of every op for codes x (`simulator.session`)."""
        from simulator.session import Session

        return Session(self, self._check_input(x), batch_size)


def _last_uses(ops: list[Op]) -> dict[int, int]:
    last = {}
    for i, op in enumerate(ops):
        for s in op.src:
            last[s] = i
    last[len(ops)] = len(ops)
    return last
