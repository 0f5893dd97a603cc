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
from dissemination import memory
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
