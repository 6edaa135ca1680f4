"""numba flags for the integer engine, in one place.

Bit-exact code never uses fastmath. `NJIT` kernels run on one thread and release the GIL;
`PARALLEL` kernels split work over images with `prange`, each iteration writing its own
disjoint slice of the output.
"""

from __future__ import annotations

NJIT = dict(cache=True, nogil=True)
PARALLEL = dict(cache=True, nogil=True, parallel=True)
