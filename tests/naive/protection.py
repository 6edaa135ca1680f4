"""Naive references for memory_models.protection: bit lists, an explicit parity-check
matrix, and a whole-region read that builds every code word cell by cell (slow)."""

from __future__ import annotations

SECDED = {"secded-72-64": (72, 64), "secded-39-32": (39, 32), "secded-137-128": (137, 128)}


def _layout(n: int, k: int) -> list[int]:
    """Hamming position of every cell: data cells, check cells 2^0.., overall parity (0)."""
    r = n - k - 1
    data = [p for p in range(1, n) if p & (p - 1) != 0]
    assert len(data) == k
    return data + [1 << i for i in range(r)] + [0]


def secded_encode(data: list[int], n: int, k: int) -> list[int]:
    """k data bits -> n cells, each check bit the parity of the positions it covers."""
    pos = _layout(n, k)
    word = list(data) + [0] * (n - k)
    r = n - k - 1
    for i in range(r):  # check cell k + i covers every position with bit i set
        word[k + i] = sum(data[t] for t in range(k) if (pos[t] >> i) & 1) % 2
    word[n - 1] = sum(word[: n - 1]) % 2
    return word


def secded_decode(read: list[int], n: int, k: int) -> tuple[list[int], str]:
    """n read cells -> (k data bits, 'ok' | 'corrected' | 'detected'), rows of H one by one."""
    pos = _layout(n, k)
    r = n - k - 1
    syndrome = 0
    for i in range(r):  # row i of H: every cell whose position has bit i set
        bit = sum(read[c] for c in range(n) if (pos[c] >> i) & 1) % 2
        syndrome |= bit << i
    parity = sum(read) % 2
    word = list(read)
    if syndrome == 0 and parity == 0:
        return word[:k], "ok"
    if parity == 1:
        if syndrome == 0:
            return word[:k], "corrected"
        if syndrome in pos:
            word[pos.index(syndrome)] ^= 1
            return word[:k], "corrected"
        return word[:k], "detected"
    return word[:k], "detected"


def replicas(k: int, bits: int, top: int, copies: int) -> list[int]:
    """For every check cell, the data cell it copies (msb-dup / msb-tmr)."""
    out = []
    for s in range(k // bits):
        for t in range(min(top, bits)):
            out += [s * bits + bits - 1 - t] * (copies - 1)
    return out


def encode_word(scheme: str, data: list[int], bits: int, k: int, top: int) -> list[int]:
    if scheme in SECDED:
        return secded_encode(data, *SECDED[scheme])
    if scheme == "parity":
        return list(data) + [sum(data) % 2]
    copies = 2 if scheme == "msb-dup" else 3
    return list(data) + [data[c] for c in replicas(k, bits, top, copies)]


def decode_word(scheme: str, read: list[int], bits: int, k: int, top: int, double: str
                ) -> tuple[list[int], set[int]]:  # fmt: skip
    """-> (k data bits, slots to zero)."""
    slots = k // bits
    if scheme in SECDED:
        data, status = secded_decode(read, *SECDED[scheme])
        return data, set(range(slots)) if status == "detected" and double == "zero" else set()
    if scheme == "parity":
        return list(read[:k]), set(range(slots)) if sum(read) % 2 else set()
    copies = 2 if scheme == "msb-dup" else 3
    src = replicas(k, bits, top, copies)
    data = list(read[:k])
    zero = set()
    for d in sorted(set(src)):
        copy_cells = [k + i for i, s in enumerate(src) if s == d]
        vals = [read[d]] + [read[c] for c in copy_cells]
        if copies == 2:
            if vals[0] != vals[1]:
                zero.add(d // bits)
        else:
            data[d] = 1 if sum(vals) >= 2 else 0
    return data, zero


def read_region(codes: list[int], bits: int, scheme: str, k: int, n: int, d: int, top: int,
                double: str, zero_code: int | None, faults: dict[int, str]) -> list[int]:
    """Every weight of a coded region as read. faults: region cell offset -> 'f01' | 'f10' |
    's0' | 's1'. Cell of bit i of code word w: group w // d, lane w % d -> g*d*n + i*d + lane."""
    slots = k // bits
    n_words = -(-len(codes) // slots)
    n_words = -(-n_words // d) * d
    out = list(codes)
    for w in range(n_words):
        data = [0] * k
        for s in range(slots):
            q = w * slots + s
            if q < len(codes):
                for j in range(bits):
                    data[s * bits + j] = (codes[q] >> j) & 1
        stored = encode_word(scheme, data, bits, k, top)
        read = list(stored)
        for i in range(n):
            kind = faults.get((w // d) * d * n + i * d + w % d)
            if kind == "s0":
                read[i] = 0
            elif kind == "s1":
                read[i] = 1
            elif kind == "f01" and stored[i] == 0:
                read[i] = 1
            elif kind == "f10" and stored[i] == 1:
                read[i] = 0
        got, zero = decode_word(scheme, read, bits, k, top, double)
        for s in range(slots):
            q = w * slots + s
            if q >= len(codes):
                break
            if s in zero and zero_code is not None:
                out[q] = zero_code
            else:
                out[q] = sum(got[s * bits + j] << j for j in range(bits))
    return out
