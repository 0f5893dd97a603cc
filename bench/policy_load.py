"""Loading a policy of 1,000 agreements (issue 10: <= 300 ms per task).

What a task pays is ``compiled_policy``: hash the files, read the validated JSON snapshot named by
that hash. The references, in the same run: the first compilation (``load_policy``: every YAML
file parsed with libyaml and validated) and the same files on PyYAML's pure-Python parser.

The policy is the tests' own (tests/support/policy), with each agreement copied into 1,000
agreements of 1,000 organisations, each with its focal points: what a global deployment's
include/ holds.

    make bench   # or: PYTHONPATH=plugins .venv/bin/python bench/policy_load.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from policies import build_policy  # noqa: E402
from summary import Figure, median_seconds, record  # noqa: E402

AGREEMENTS = 1000


def main() -> None:
    from dissemination.policy import load_policy, loading
    from dissemination.policy.snapshot import compiled_policy

    with tempfile.TemporaryDirectory() as tmp:
        include = build_policy(Path(tmp), AGREEMENTS)
        policy = load_policy(include)
        assert len(policy.agreements) == AGREEMENTS, len(policy.agreements)
        assert compiled_policy(include, Path(tmp) / "cache") == policy  # compiles once
        task = median_seconds(lambda: compiled_policy(include, Path(tmp) / "cache"))
        fast = median_seconds(lambda: load_policy(include))
        c_loader = loading._UniqueKeyLoader
        try:  # the reference: the same loader on PyYAML's pure-Python parser
            loading._UniqueKeyLoader = loading.unique_key_loader(yaml.SafeLoader)
            slow = median_seconds(lambda: load_policy(include))
        finally:
            loading._UniqueKeyLoader = c_loader
    print(f"policy for a task, {AGREEMENTS} agreements (compiled snapshot by content hash): "
          f"{task * 1000:7.1f} ms")
    print(f"  compiling it (load_policy, libyaml): {fast * 1000:7.1f} ms ({fast / task:4.1f}x); "
          f"on the pure-Python YAML parser: {slow * 1000:7.1f} ms ({slow / task:4.1f}x)")
    record(policy_load_1000_ms=Figure(round(task * 1000, 1),
                                      "ms, a task's policy at 1,000 agreements (compiled snapshot)",
                                      "<= 300 ms"),
           policy_compile_1000_ms=Figure(round(fast * 1000, 1),
                                         "ms, first compilation with libyaml"),
           policy_load_1000_pure_python_ms=Figure(round(slow * 1000, 1),
                                                  "ms, first compilation on PyYAML's "
                                                  "pure-Python parser"))


if __name__ == "__main__":
    main()
