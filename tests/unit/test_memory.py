"""A task's freed columns leave the process: ``memory.lean`` against the allocators' defaults."""

from __future__ import annotations

import subprocess
import sys

# Frees a 1 MB block first (glibc then raises its mmap threshold past it), then holds 400
# blocks of 512 KB, each followed by a small object that stays, and frees the blocks: what is
# left is what the allocator kept of 200 MB freed.
KEPT = """
import sys
import numpy as np
import pyarrow as pa
from dissemination.runs import memory
if sys.argv[1] == "lean":
    memory.lean()
print(pa.default_memory_pool().backend_name)
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
np.ones(2**20, dtype=np.uint8)
blocks, kept = [], []
for _ in range(400):
    blocks.append(np.ones(2**19, dtype=np.uint8))
    kept.append(np.ones(64, dtype=np.uint8))
    kept.append(pa.array(np.ones(2**16, dtype=np.int64)))
before = rss()
del blocks
print((before - rss()) // 2**20)
"""


def freed_mb(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", KEPT, mode], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


def test_lean_gives_freed_blocks_back_at_once():
    pool, freed = freed_mb("lean")
    assert pool == "system"
    assert freed >= 190  # of 200 MB, without a trim


def test_the_defaults_would_keep_them():
    """What ``lean`` is for: without it, the same frees return (almost) nothing."""
    pool, freed = freed_mb("default")
    assert pool != "system"
    assert freed < 50


def test_a_round_holding_task_freezes_what_was_alive_and_thaws_it_after():
    import gc

    from dissemination.runs import memory

    seen = []

    @memory.holds_a_round
    def task(x):
        """a task"""
        seen.append(gc.get_freeze_count())
        with memory.frozen():  # nested: the outer block thaws
            pass
        seen.append(gc.get_freeze_count())
        return x + 1

    assert task.__doc__ == "a task"  # TaskFlow reads the wrapped function
    assert task(1) == 2
    assert seen[0] > 1000 and seen[1] >= seen[0]
    assert gc.get_freeze_count() == 0


def test_a_failing_task_thaws_too():
    import gc

    import pytest

    from dissemination.runs import memory

    @memory.holds_a_round
    def task():
        raise ValueError("bad round")

    with pytest.raises(ValueError, match="bad round"):
        task()
    assert gc.get_freeze_count() == 0
