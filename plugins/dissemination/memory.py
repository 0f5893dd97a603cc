"""Giving back the memory a step freed, so that the next step starts from little.

Arrow's allocator (mimalloc) and the C library keep what a step freed for its next allocation;
a million-site round leaves some 500 MB so kept. A task is its own process under the scheduler,
but ``airflow dags test`` (the demo, an engineer's run) runs every task in one process: there
the next task's peak would stand on the last one's.
"""

from __future__ import annotations

import ctypes
import ctypes.util


def release() -> None:
    """Return freed memory to the system: Arrow's pool first, then the C library's heap."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    libc = ctypes.util.find_library("c")
    if libc:  # glibc's malloc_trim; other C libraries have none (nothing to do there)
        trim = getattr(ctypes.CDLL(libc), "malloc_trim", None)
        if trim is not None:
            trim(0)
