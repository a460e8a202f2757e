"""Element-wise work over one long vector, in cache-sized chunks.

An optimiser's NumPy update is a dozen cheap element-wise passes over every
parameter. Done chunk by chunk, all passes over a chunk run while it sits in
the core's cache instead of streaming the whole vector from memory once per
pass, and intermediate results go to one small scratch chunk instead of a
temporary the size of the vector. On CuPy the work runs as one chunk.

(Splitting the chunks between threads was measured and removed: right after
a matrix product, as in every training step, two threads were 4 to 11%
slower than one; see ``benchmarks/README.md``.)
"""

from typing import Any

import numpy as np

CHUNK = 1 << 16  # 65536 float32 = 256 KiB per array: a chunk of each of Adam's arrays fits in a core's L2
_scratch: dict[Any, Any] = {}  # dtype -> the scratch chunk, reused by every call


def for_each_chunk(n, fn, xp=np, dtype=np.float32):
    """Call ``fn(slice, scratch)`` for consecutive slices covering ``range(n)``: chunk by chunk (NumPy) or at once (CuPy).

    ``scratch`` is a work array of ``dtype`` and the slice's length, for
    intermediate results; its contents are undefined on entry. On NumPy it is
    one chunk, reused for every chunk, so it stays in cache.
    """
    if xp is not np:
        fn(slice(0, n), xp.empty(n, dtype))
        return
    dtype = np.dtype(dtype)
    scratch = _scratch.get(dtype)
    if scratch is None or scratch.size != CHUNK:
        scratch = _scratch[dtype] = np.empty(CHUNK, dtype)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        fn(slice(start, stop), scratch[:stop - start])
