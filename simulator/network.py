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

Sessions (`net.session(x)`): cache the clean output of every op for the batch x. Memory:
sum over ops of N * output elements * itemsize (VGG3 on Fashion-MNIST: about 38 kB per
image, 380 MB for 10 000 images), + N * O * 8 bytes per linear layer once a "patch" pass
has run. `session.logits(deltas)` is exact and equals `with_weights(...).forward(x)`, in
one of two ways (`mode`, "auto" picks by the fraction of weights changed):
  patch   per-image bookkeeping, for a handful of changed weights:
          conv layers   recompute only the output channels a changed weight/bias feeds (all
                        images), and whole images only where their input changed;
          linear layers update cached clean accumulators: + dw * x_k per changed weight
                        (all images, O(N) each), + (x_new - x)_k * w_k per changed input of
                        an image (O(O) each);
          other ops     rerun only on images whose input differs from the clean pass;
          and an image whose output equals the clean one is clean again downstream.
  reuse   batch by batch: an op whose inputs are unchanged keeps its clean output or
          recomputes only the channels whose weights changed; every op downstream of a
          change runs in full (at high error rates every image is dirty anyway).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from simulator import engine, kernels
from simulator.ops import Conv, Linear, Op, code_dtype, weight_range

__all__ = ["IntegerNetwork", "InputSpec", "Session"]

DEFAULT_BATCH = 1024
# Session.logits(mode="auto"): per-image patches when at most this fraction of the stored
# weights changed, else the reuse pass. Beyond ~1e-4 a few changed weights of an early
# layer already reach every image, and per-image bookkeeping costs more than it saves
# (benchmarks/results_campaign.md).
PATCH_FRACTION = 1e-4


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

    def session(self, x: np.ndarray, batch_size: int | None = None) -> Session:
        """Cache the clean activations of every op for codes x (see `Session`)."""
        return Session(self, self._check_input(x), batch_size)


def _last_uses(ops: list[Op]) -> dict[int, int]:
    last = {}
    for i, op in enumerate(ops):
        for s in op.src:
            last[s] = i
    last[len(ops)] = len(ops)
    return last


class Session:
    """Clean activations of every op for one input batch; fast exact corrupted passes.

    Memory: every op output for all N images (sum of N * elements * itemsize).
    `logits(deltas)` == net.with_weights(applied deltas).forward(x), recomputing only the
    output channels a changed weight/bias feeds (for all images), and downstream only the
    images whose values differ from the clean pass (exact: the arithmetic is integer).
    """

    def __init__(self, net: IntegerNetwork, x: np.ndarray, batch_size: int | None = None):
        self.net = net
        n = x.shape[0]
        self.batch_size = bs = int(batch_size or DEFAULT_BATCH)
        chunks = [net.run_values(x[s : s + bs], keep=True) for s in range(0, n, bs)]
        self.values = [np.concatenate([c[v] for c in chunks]) for v in range(len(net.ops) + 1)]
        self.n = n
        self.n_weights = sum(int(w.size) for w in net._weights.values())
        # clean accumulators (int64, bias excluded) and transposed weights of linear layers,
        # for exact per-image delta updates; built on the first "patch" pass
        self.acc: dict[int, np.ndarray] = {}
        self._wt: dict[int, np.ndarray] = {}

    def _linear_state(self) -> None:
        if self.acc or not any(isinstance(op, Linear) for op in self.net.ops):
            return
        net = self.net
        for i, op in enumerate(net.ops):
            if isinstance(op, Linear):
                w = net._weights[op.weight]
                self.acc[i] = engine.linear_acc(self.values[op.src[0]], w, engine._wide(op),
                                                net.layer_input(i))  # fmt: skip
                self._wt[i] = np.ascontiguousarray(w.T)

    @property
    def clean_logits(self) -> np.ndarray:
        out = self.values[-1]
        return out.reshape(self.n, -1).astype(np.int32)

    @property
    def nbytes(self) -> int:
        """Bytes held: every op output, linear accumulators and transposed linear weights
        (the last two once a "patch" pass has built them)."""
        arrays = self.values + list(self.acc.values()) + list(self._wt.values())
        return int(sum(v.nbytes for v in arrays))

    def logits(self, deltas: Mapping[str, tuple[np.ndarray, np.ndarray]],
               mode: str = "auto") -> np.ndarray:  # fmt: skip
        """int32 logits with weight (or bias) codes changed: name -> (flat idx, new values).

        mode "patch": per-image bookkeeping (only images whose values differ are carried
        downstream); "reuse": every image downstream of a change, in batches, reusing the
        clean outputs of ops whose inputs are unchanged (`_reuse_pass`); "auto": patch when
        at most PATCH_FRACTION of the stored weights changed, else reuse. Same integers.
        """
        if mode not in ("auto", "patch", "reuse"):
            raise ValueError(f"mode must be 'auto', 'patch' or 'reuse', got {mode!r}")
        net = self.net
        weights, biases, changed = {}, {}, {}
        for name, (idx, vals) in deltas.items():
            idx = np.asarray(idx, np.int64).ravel()
            vals = np.asarray(vals).ravel()
            if idx.shape != vals.shape:
                raise ValueError(f"{name!r}: {idx.size} indices but {vals.size} values")
            if name in net._weights:
                arr = np.array(net._weights[name])
                store = weights
                checked = net._checked_weight
            elif name in net._biases:
                arr = np.array(net._biases[name])
                store = biases
                checked = net._checked_bias
            else:
                raise ValueError(f"unknown weight or bias {name!r}")
            if idx.size and (idx.min() < 0 or idx.max() >= arr.size):
                raise ValueError(f"{name!r}: index out of range for {arr.size} elements")
            arr.reshape(-1)[idx] = vals
            store[name] = checked(name, arr)
            per_out = arr.size // arr.shape[0]
            op_i = net._layer_of[name]
            changed.setdefault(op_i, set()).update(np.unique(idx // per_out).tolist())
        all_w = {**net._weights, **weights}
        all_b = {**net._biases, **biases}
        n_changed = sum(int(np.size(d[0])) for d in deltas.values())
        if mode == "reuse" or (mode == "auto" and n_changed > PATCH_FRACTION * self.n_weights):
            return self._reuse_pass(all_w, all_b, changed)
        self._linear_state()
        # patches[v] = (sorted image indices, their values) where value v differs from clean
        patches: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for i, op in enumerate(net.ops):
            dirty = _union([patches[s][0] for s in op.src if s in patches])
            clean_out = self.values[i + 1]
            if isinstance(op, Linear) and (i in changed or dirty.size):
                self._linear_delta(i, op, dirty, patches, weights, biases)
            elif i in changed:
                chans = np.array(sorted(changed[i]), np.int64)
                xs = [self.values[s] for s in op.src]
                y = net.run_op(i, xs, chans=chans, base=clean_out, weights=all_w, biases=all_b)
                if dirty.size:
                    y[dirty] = net.run_op(i, self._gather(op.src, dirty, patches),
                                          weights=all_w, biases=all_b)  # fmt: skip
                diff = np.any((y[:, chans] != clean_out[:, chans]).reshape(self.n, -1), axis=1)
                diff[dirty] = True
                imgs = np.flatnonzero(diff)
                self._set_patch(patches, i + 1, imgs, y[imgs])
            elif dirty.size:
                y = net.run_op(i, self._gather(op.src, dirty, patches),
                               weights=all_w, biases=all_b)  # fmt: skip
                self._set_patch(patches, i + 1, dirty, y)
        out = self.clean_logits.copy()
        last = len(net.ops)
        if last in patches:
            imgs, vals = patches[last]
            out[imgs] = vals.reshape(imgs.size, -1)
        return out

    def _reuse_pass(self, all_w, all_b, changed: dict[int, set]) -> np.ndarray:
        """Logits of every image, batch by batch, with the changed weights / biases.

        An op whose inputs are all clean (equal to the cached clean values) keeps its clean
        output if none of its weights changed, and recomputes only the output channels
        `changed[i]` onto the clean output if some did (exact: a channel's output depends
        only on its own weights and the inputs). Every other op runs in full. No per-image
        comparison: downstream of the first change every image is recomputed, which is
        what high error rates need (a changed weight in an early layer reaches every image).
        """
        net = self.net
        out = np.empty((self.n, net.num_classes), np.int32)
        last = len(net.ops)
        for s in range(0, self.n, self.batch_size):
            sl = slice(s, min(self.n, s + self.batch_size))
            vals: dict[int, np.ndarray] = {}  # value -> this batch's (changed) value
            for i, op in enumerate(net.ops):
                if all(v not in vals for v in op.src):
                    if i not in changed:
                        continue  # output clean: read from the cache when needed
                    chans = np.array(sorted(changed[i]), np.int64)
                    xs = [self.values[v][sl] for v in op.src]
                    vals[i + 1] = net.run_op(i, xs, chans=chans, base=self.values[i + 1][sl],
                                             weights=all_w, biases=all_b)  # fmt: skip
                else:
                    xs = [vals[v] if v in vals else self.values[v][sl] for v in op.src]
                    vals[i + 1] = net.run_op(i, xs, weights=all_w, biases=all_b)
                for v in op.src:
                    if net._last_use[v] == i:
                        vals.pop(v, None)
            logits = vals[last] if last in vals else self.values[last][sl]
            out[sl] = logits.reshape(logits.shape[0], -1)
        return out

    def _linear_delta(self, i, op, dirty, patches, weights, biases) -> None:
        """Exact update of linear op i from its clean accumulators (no full recompute).

        new acc = clean acc + sum over changed weights dw * x_clean  (all images, their
        channels) and, for images whose input changed, + sum_k (x_new - x_clean)_k * w_k
        + sum over changed weights dw * (x_new - x_clean)_k.
        """
        net = self.net
        x_clean = self.values[op.src[0]]
        clean_out = self.values[i + 1]
        acc = self.acc[i]
        w_old = net._weights[op.weight]
        f_n = w_old.shape[1]
        cols = ks = dws = np.zeros(0, np.int64)
        if op.weight in weights:
            diff = np.flatnonzero(weights[op.weight].reshape(-1) != w_old.reshape(-1))
            cols, ks = diff // f_n, diff % f_n
            dws = weights[op.weight].reshape(-1)[diff].astype(np.int64) - w_old.reshape(-1)[diff]
        bias = net._biases.get(op.bias) if op.bias is not None else None
        if op.bias is not None and op.bias in biases:
            bias = biases[op.bias]
            b_changed = np.flatnonzero(bias != net._biases[op.bias])
        else:
            b_changed = np.zeros(0, np.int64)
        chans = np.union1d(cols, b_changed).astype(np.int64)
        rq = op.requant
        out_rows = {}
        if chans.size:
            pos = np.searchsorted(chans, cols)
            acc_a = np.ascontiguousarray(acc[:, chans])
            kernels._add_weight_deltas(acc_a, pos, ks, dws, x_clean)
            out_a = _requant_cols(acc_a, bias, rq, chans, op.dtype)
            differ = np.any(out_a != clean_out[:, chans], axis=1)
            differ[dirty] = False
            for n in np.flatnonzero(differ):
                row = clean_out[n].copy()
                row[chans] = out_a[n]
                out_rows[int(n)] = row
        if dirty.size:
            x_new = self._gather(op.src, dirty, patches)[0]
            acc_d = acc[dirty].astype(np.int64)
            kernels._add_input_deltas(acc_d, x_new, x_clean[dirty], self._wt[i])
            if cols.size:
                kernels._add_weight_deltas(acc_d, cols, ks, dws, x_new)
            out_d = _requant_cols(acc_d, bias, rq, np.arange(acc.shape[1]), op.dtype)
            for j, n in enumerate(dirty):
                out_rows[int(n)] = out_d[j]
        if out_rows:
            imgs = np.array(sorted(out_rows), np.int64)
            self._set_patch(patches, i + 1, imgs, np.stack([out_rows[n] for n in imgs]))

    def _gather(self, srcs, imgs: np.ndarray, patches) -> list[np.ndarray]:
        xs = []
        for s in srcs:
            v = self.values[s][imgs]
            if s in patches:
                p_imgs, p_vals = patches[s]
                v[np.searchsorted(imgs, p_imgs)] = p_vals
            xs.append(v)
        return xs

    def _set_patch(self, patches, v: int, imgs: np.ndarray, vals: np.ndarray) -> None:
        """Keep only the images whose value differs from the clean one."""
        if imgs.size == 0:
            return
        clean = self.values[v][imgs]
        keep = np.any((vals != clean).reshape(imgs.size, -1), axis=1)
        if keep.any():
            patches[v] = (imgs[keep], vals[keep])


def _requant_cols(acc: np.ndarray, bias, rq, chans: np.ndarray, dtype) -> np.ndarray:
    """Requantize acc [N, len(chans)] with the requantization of channels `chans`."""
    b = np.zeros(chans.size, np.int64) if bias is None else bias[chans].astype(np.int64)
    out = np.empty(acc.shape, dtype)
    n = acc.shape[0]
    kernels._requant(
        np.ascontiguousarray(acc).reshape(n, chans.size, 1), b, rq.mult[chans], rq.add[chans],
        rq.shift[chans], rq.lo[chans], rq.hi[chans], bool(rq.sign), out.reshape(n, -1, 1),
    )  # fmt: skip
    return out


def _union(arrays: list[np.ndarray]) -> np.ndarray:
    if not arrays:
        return np.zeros(0, np.int64)
    if len(arrays) == 1:
        return arrays[0]
    return np.unique(np.concatenate(arrays))
