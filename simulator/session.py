"""Session: the clean activations of a test set, for fast exact corrupted passes.

`net.session(x)` caches the clean output of every op for the batch x. Memory:
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

import numpy as np

from simulator import engine, kernels
from simulator.network import DEFAULT_BATCH, IntegerNetwork
from simulator.ops import Linear

__all__ = ["Session", "PATCH_FRACTION"]

# Session.logits(mode="auto"): per-image patches when at most this fraction of the stored
# weights changed, else the reuse pass. Beyond ~1e-4 a few changed weights of an early
# layer already reach every image, and per-image bookkeeping costs more than it saves
# (benchmarks/results_campaign.md).
PATCH_FRACTION = 1e-4


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
        rq.kernel_shift()[chans], rq.lo[chans], rq.hi[chans], bool(rq.sign), out.reshape(n, -1, 1),
    )  # fmt: skip
    return out


def _union(arrays: list[np.ndarray]) -> np.ndarray:
    if not arrays:
        return np.zeros(0, np.int64)
    if len(arrays) == 1:
        return arrays[0]
    return np.unique(np.concatenate(arrays))
