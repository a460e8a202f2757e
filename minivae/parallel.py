"""Element-wise work over one long vector, in cache-sized chunks, optionally spread over CPU threads.

An optimiser's update is a dozen cheap element-wise passes over every
parameter. Done chunk by chunk, all passes over a chunk run while it sits in
the core's cache instead of streaming the whole vector from memory once per
pass: on the 2-core machine of ``benchmarks/README.md`` that makes an Adam
step over 652,824 parameters about a third faster on one thread. Chunks also
let the work be split between threads: NumPy releases the GIL inside its
ufunc loops. On CuPy the GPU is already parallel, so the work runs as one
chunk.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

CHUNK = 1 << 16  # 65536 float32 = 256 KiB per array: a chunk of each of Adam's arrays fits in a core's L2
_pool = None
_local = threading.local()  # each thread's scratch chunk


def n_threads():
    """Worker threads: ``$MINIVAE_NUM_THREADS``, default 1.

    One by default: on the 2-core machine of ``benchmarks/README.md`` two
    threads made an Adam step faster in isolation but slower right after a
    matrix product, as in every training step. The BLAS library's worker
    thread keeps spinning on the other core for a while after each product,
    and handing work to a thread and getting the answer back takes about
    100 microseconds. Try more threads on a machine with spare cores.
    """
    text = os.environ.get("MINIVAE_NUM_THREADS", "1")
    try:
        threads = int(text)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"MINIVAE_NUM_THREADS must be a whole number of threads, 1 or more; got {text!r}. "
                         "Unset it for the default of 1")
    return threads


def for_each_chunk(n, fn, xp=np, dtype=np.float32):
    """Call ``fn(slice, scratch)`` for consecutive slices covering ``range(n)``: chunk by chunk (NumPy) or at once (CuPy).

    ``scratch`` is a work array of ``dtype`` and the slice's length, for
    intermediate results. On NumPy it is one chunk per thread, reused for
    every chunk, so it stays in cache and costs no memory traffic of its own;
    its contents are undefined on entry. With ``$MINIVAE_NUM_THREADS`` above 1,
    NumPy's chunks are shared between threads.
    """
    global _pool
    if xp is not np:
        fn(slice(0, n), xp.empty(n, dtype))
        return

    def run(lo, hi):
        scratch = _scratch(dtype)
        for start in range(lo, hi, CHUNK):
            stop = min(start + CHUNK, hi)
            fn(slice(start, stop), scratch[:stop - start])

    threads = n_threads()
    if threads == 1 or n < 2 * CHUNK:
        run(0, n)
        return
    if _pool is None or _pool._max_workers != threads:
        _pool = ThreadPoolExecutor(threads, thread_name_prefix="minivae")
    # one equal, contiguous part per thread (aligned to 64 bytes), each walked chunk by chunk
    bounds = [min(n, (n * i // threads) // 16 * 16) for i in range(threads)] + [n]
    for future in [_pool.submit(run, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]:
        future.result()


def _scratch(dtype):
    """This thread's scratch chunk (``CHUNK`` entries of ``dtype``), allocated on first use."""
    buf = getattr(_local, "scratch", None)
    if buf is None or buf.dtype != dtype:
        buf = _local.scratch = np.empty(CHUNK, dtype)
    return buf
