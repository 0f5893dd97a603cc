"""Loading a policy of 1,000 agreements (issue 10: <= 300 ms), against the same files parsed by
PyYAML's pure-Python loader in the same run (the reference; libyaml is what makes the difference).

The policy is the tests' own (tests/policy), with each agreement copied into 1,000 agreements of
1,000 organisations, each with its focal points: what a global deployment's include/ holds.

    make bench   # or: PYTHONPATH=plugins .venv/bin/python bench/policy_load.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from summary import median_seconds, record  # noqa: E402

AGREEMENTS = 1000


def build(folder: Path, count: int) -> Path:
    """tests/policy with ``count`` agreements (copies of the shipped ones, new ids)."""
    include = folder / "include"
    shutil.copytree(REPO / "tests" / "policy", include)
    templates = sorted((include / "agreements").glob("*.yaml"))
    for i in range(count - len(templates)):
        template = templates[i % len(templates)]
        agreement = yaml.safe_load(template.read_text())
        people = yaml.safe_load((include / "focal_points" / f"{agreement['focal_points']}.yaml")
                                .read_text())
        ident = f"{agreement['id']}-{i:04d}"
        org = f"org-{i:04d}"
        agreement.update(id=ident, organisation=org, focal_points=ident)
        agreement["password"]["variable"] = f"package_password_{ident.replace('-', '_')}"
        people.update(id=ident, organisation=org) if "id" in people else people.update(
            organisation=org)
        (include / "organisations" / f"{org}.yaml").write_text(
            yaml.safe_dump({"id": org, "name": f"Partner {i:04d}"}))
        (include / "agreements" / f"{ident}.yaml").write_text(yaml.safe_dump(agreement))
        (include / "focal_points" / f"{ident}.yaml").write_text(yaml.safe_dump(people))
    return include


def main() -> None:
    from dissemination.policy import load_policy, loading

    with tempfile.TemporaryDirectory() as tmp:
        include = build(Path(tmp), AGREEMENTS)
        policy = load_policy(include)
        assert len(policy.agreements) == AGREEMENTS, len(policy.agreements)
        fast = median_seconds(lambda: load_policy(include))
        c_loader = loading._UniqueKeyLoader
        try:  # the reference: the same loader on PyYAML's pure-Python parser
            loading._UniqueKeyLoader = loading.unique_key_loader(yaml.SafeLoader)
            slow = median_seconds(lambda: load_policy(include))
        finally:
            loading._UniqueKeyLoader = c_loader
    print(f"load_policy, {AGREEMENTS} agreements: {fast * 1000:7.1f} ms "
          f"(pure-Python YAML parser: {slow * 1000:7.1f} ms, {slow / fast:4.1f}x slower)")
    record(policy_load_1000_ms=round(fast * 1000, 1),
           policy_load_1000_pure_python_ms=round(slow * 1000, 1))


if __name__ == "__main__":
    main()
