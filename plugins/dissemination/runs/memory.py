"""Keeping a task's memory near what it holds: large buffers come from and go back to the system.

A round's columns are large buffers (8 MB per million values) that live for one step. Left to
their defaults, both allocators keep them after they are freed: glibc raises its mmap threshold
to the largest block freed so far (up to 32 MB), so every later column lands on a heap that only
shrinks from its top, and Arrow's default pool (mimalloc) keeps freed pages for reuse. Reading a
million-site round (286 MB in Arrow) so peaked at 630 MB above the task's start; with ``lean``
at 355 MB, in the same time (``bench/urgent.py``). A task is its own process under the scheduler,
but ``airflow dags test`` (the demo, an engineer's run) runs every task in one process: there the
next task's peak would also stand on what the last one kept.

Tasks holding a round are wrapped in ``holds_a_round``: ``lean`` before their imports, ``release``
after.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD = 256 * 1024  # a block this large or larger is mapped, and unmapped when freed


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def holds_a_round(task):
    """A task function that holds a round: ``lean`` before it runs (its imports included),
    the objects alive then ``frozen`` while it runs, ``release`` once it returns or fails."""

    @functools.wraps(task)
    def run(*args, **kwargs):
        lean()
        try:
            with frozen():
                return task(*args, **kwargs)
        finally:
            release()

    return run


@contextlib.contextmanager
def frozen():
    """The objects alive now left out of the collector's full passes until the block ends: a
    task's imports and reads set such passes off, each over Airflow's 700k objects for nothing
    (0.4 s in ``airflow dags test``); a forked child then also keeps their pages shared. Inside
    another ``frozen`` block, the outer block thaws them."""
    thaw = gc.get_freeze_count() == 0
    gc.freeze()
    try:
        yield
    finally:
        if thaw:
            gc.unfreeze()


def lean() -> None:
    """Serve large blocks by mapping them (a fixed threshold: glibc no longer raises it) and
    Arrow's buffers from the C library, so a freed column leaves the process at once; other C
    libraries have no mallopt (then only Arrow's pool changes)."""
    # pyarrow here, not at the top: DAG files load this module (holds_a_round) when they parse
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def release() -> None:
    """Return freed memory to the system: Arrow's pool first, then the C library's heap."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:  # glibc's; other C libraries have none (nothing to do there)
        trim(0)
