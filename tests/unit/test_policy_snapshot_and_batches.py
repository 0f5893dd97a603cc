"""What keeps a run of 1,000 agreements cheap: the compiled policy and batched deliveries."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dissemination.delivery.batches import (
    LABEL_LENGTH,
    ONE_EACH_UP_TO,
    DeliveriesRefused,
    batch_deliveries,
    failed,
)
from dissemination.errors import PermanentError
from dissemination.policy import load_policy
from dissemination.policy import snapshot as snapshots
from dissemination.policy.snapshot import (
    SnapshotInvalid,
    compiled_policy,
    read_snapshot,
    snapshot_name,
)


def test_the_compiled_policy_is_the_loaded_one_and_is_read_back_by_hash(include, tmp_path):
    cache = tmp_path / "cache"
    first = compiled_policy(include, cache)
    assert first == load_policy(include)
    (snapshot,) = cache.iterdir()
    assert snapshot.name == snapshot_name(first.content_sha256)
    snapshot.write_bytes(snapshot.read_bytes().replace(b'"purpose":"', b'"purpose":"(cached) '))
    assert compiled_policy(include, cache).agreements != first.agreements  # read, not reloaded


def test_an_edited_policy_file_is_compiled_anew(include, tmp_path):
    cache = tmp_path / "cache"
    before = compiled_policy(include, cache)
    agreement = next((include / "agreements").glob("*.yaml"))
    agreement.write_text(agreement.read_text() + "# revised by the data protection officer\n")
    after = compiled_policy(include, cache)
    assert after.content_sha256 != before.content_sha256
    assert after == load_policy(include)
    assert len(list(cache.iterdir())) == 2


_COMPILE = """
import json, sys
from dissemination.policy.snapshot import compiled_policy
policy = compiled_policy(sys.argv[1], sys.argv[2])
print(json.dumps(sorted(a.purpose for a in policy.agreements.values())))
"""


def _compile_in_a_worker(plugins: Path, include: Path, cache: Path) -> list[str]:
    """The agreements' purposes as a fresh worker process running the code in ``plugins``
    compiles or reads them."""
    done = subprocess.run([sys.executable, "-c", _COMPILE, str(include), str(cache)],
                          env={"PYTHONPATH": str(plugins), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_a_deploy_that_changes_how_policy_is_compiled_recompiles_it(include, tmp_path):
    plugins = tmp_path / "plugins"
    shutil.copytree(Path(snapshots.__file__).parents[1], plugins / "dissemination",
                    ignore=shutil.ignore_patterns("__pycache__"))
    cache = tmp_path / "cache"
    compiled = _compile_in_a_worker(plugins, include, cache)
    assert compiled and not any(p.startswith("(cached) ") for p in compiled)
    (cached,) = cache.iterdir()
    cached.write_bytes(cached.read_bytes().replace(b'"purpose":"', b'"purpose":"(cached) '))
    assert all(p.startswith("(cached) ") for p in _compile_in_a_worker(plugins, include, cache))
    merging = plugins / "dissemination" / "policy" / "merging.py"
    merging.write_text(merging.read_text() + "\n# a deploy: rules now merge another way\n")
    assert _compile_in_a_worker(plugins, include, cache) == compiled  # recompiled, not read
    assert len(list(cache.iterdir())) == 2


def test_the_code_hash_covers_every_module_loading_a_policy_imports(include):
    imports = subprocess.run(
        [sys.executable, "-c", "import sys; from dissemination.policy import load_policy; "
         f"load_policy({str(include)!r}); print('\\n'.join(m.__file__ for n, m in "
         "sys.modules.items() if n.split('.')[0] == 'dissemination'))"],
        env={"PYTHONPATH": str(Path(snapshots.__file__).parents[2])}, capture_output=True,
        text=True, check=True).stdout.split()
    hashed = {p for source in snapshots.CODE
              for p in (source.rglob("*.py") if source.is_dir() else [source])}
    assert {Path(f).resolve() for f in imports} <= hashed


def test_the_code_hash_is_the_same_wherever_the_code_is_installed(tmp_path):
    copies = []
    for where in ("a", "b/c"):
        for source in snapshots.CODE:
            target = tmp_path / where / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(source, target)
        copies.append([tmp_path / where / source.name for source in snapshots.CODE])
    assert snapshots.code_sha256(copies[0]) == snapshots.code_sha256(copies[1])
    assert snapshots.code_sha256(copies[0]) == snapshots.policy_code_sha256()
    (tmp_path / "b" / "c" / "policy" / "merging.py").write_text("# another merge\n")
    assert snapshots.code_sha256(copies[0]) != snapshots.code_sha256(copies[1])


def test_a_snapshot_of_another_policy_or_broken_is_refused(include, tmp_path):
    policy = compiled_policy(include, tmp_path)
    data = (tmp_path / snapshot_name(policy.content_sha256)).read_bytes()
    with pytest.raises(SnapshotInvalid, match="expected 000000000000"):
        read_snapshot(data, "0" * 64, "cache/x")
    with pytest.raises(SnapshotInvalid, match="cache/y: not a policy snapshot"):
        read_snapshot(data.replace(b'"agreements"', b'"agreementz"'), policy.content_sha256,
                      "cache/y")
    assert issubclass(SnapshotInvalid, PermanentError)


def test_a_broken_policy_file_is_never_cached(include, tmp_path):
    from dissemination.policy import PolicyError

    (include / "agreements" / "broken.yaml").write_text("id: [unclosed\n")
    with pytest.raises(PolicyError, match="broken.yaml"):
        compiled_policy(include, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def _orgs(counts: dict[str, int]) -> list[tuple[str, str]]:
    return [(org, org.upper()) for org, n in counts.items() for _ in range(n)]


def test_few_organisations_get_a_batch_each_in_name_order():
    deliveries = [("who", "WHO"), ("unicef", "UNICEF"), ("who", "WHO"), ("acf", "ACF")]
    batches = batch_deliveries(deliveries, size=25)
    assert [(b.organisations, b.members) for b in batches] == [
        (("ACF",), (3,)), (("UNICEF",), (1,)), (("WHO",), (0, 2))]
    assert [b.label for b in batches] == ["ACF (1 delivery)", "UNICEF (1 delivery)",
                                          "WHO (2 deliveries)"]


@given(st.dictionaries(st.text("abcdefghij", min_size=1, max_size=12),
                       st.integers(1, 40), min_size=1, max_size=300),
       st.integers(1, 60))
def test_batches_hold_whole_organisations_and_grow_with_deliveries(counts, size):
    deliveries = _orgs(counts)
    batches = batch_deliveries(deliveries, size)
    members = [m for b in batches for m in b.members]
    assert sorted(members) == list(range(len(deliveries)))  # each delivery exactly once
    for b in batches:
        assert {deliveries[m][0].upper() for m in b.members} == set(b.organisations)
        assert len(b.label) <= LABEL_LENGTH
    owners = [o for b in batches for o in b.organisations]
    assert len(owners) == len(set(owners)) == len(counts)  # no organisation split
    assert len(batches) == min(len(counts), max(min(len(counts), ONE_EACH_UP_TO),
                                                -(-len(deliveries) // size)))
    assert batch_deliveries(list(deliveries), size) == batches  # deterministic


def test_a_thousand_agreements_make_tens_of_batches_not_thousands():
    batches = batch_deliveries(_orgs({f"org-{i:04d}": 1 + i % 3 for i in range(1000)}), 25)
    assert len(batches) == 80  # 2,000 deliveries / 25
    assert max(len(b.members) for b in batches) <= 27  # even: an organisation holds up to 3
    first = batches[0]
    assert first.label == f"{', '.join(first.organisations)} ({len(first.members)} deliveries)"


def test_a_long_label_names_the_first_organisations_and_counts_the_rest():
    name = "Association pour la protection des enfants deplaces et des communautes hotes {:03d}"
    batches = batch_deliveries([(f"o{i}", name.format(i)) for i in range(48)], 25)
    assert len(batches) == ONE_EACH_UP_TO  # 3 organisations each; two names fit in a label
    for batch in batches:
        shown = ", ".join(batch.organisations[:2])
        assert batch.label == f"{shown} +1 more (3 deliveries)"
        assert len(batch.label) <= LABEL_LENGTH


def test_a_batch_fails_permanently_only_if_every_failure_is_permanent():
    class Refused(PermanentError, RuntimeError):
        pass

    both = failed([("A, a-1 (NGA-R001-partial)", Refused("agreement expired")),
                   ("B, b-1 (NGA-R001-partial)", EOFError("connection lost"))])
    assert not isinstance(both, PermanentError)
    assert str(both).splitlines() == ["2 deliveries of this batch failed:",
                                      "  A, a-1 (NGA-R001-partial): Refused: agreement expired",
                                      "  B, b-1 (NGA-R001-partial): EOFError: connection lost"]
    assert isinstance(failed([("A", Refused("expired"))]), DeliveriesRefused)
