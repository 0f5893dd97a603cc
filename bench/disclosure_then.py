"""The disclosure engine before issue 32's work (commit 082bcdf), run on today's rounds.

Issue 32 asks for the cost of protection against main's engine on the same round, measured in
the same run. That engine is read from git history (``git archive``) into a temporary folder and
run in a subprocess whose PYTHONPATH is that folder's ``plugins`` alone, so today's package
cannot shadow it. The rounds go in as conformed here, so both engines protect the same rows;
each table comes back as its frame and its columns' names and sources, which
``disclosure_cost.measure`` reads as it reads today's. Everything else the subprocess imports
(policy, classification) is unchanged since that commit.

Run as a script, this is that subprocess: ``disclosure_then.py POLICY ROUNDS OUT``.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The last commit before issue 32 changed the engine (its split into steps came next).
REFERENCE = "082bcdf"


class NoReference(RuntimeError):
    """The reference engine cannot be read from git here: the comparison cannot be made."""


@dataclass(frozen=True)
class Column:
    """What ``measure`` reads of a table's column: its name and the round's column it counts."""

    name: str
    source: str


@dataclass(frozen=True)
class Table:
    """A table the reference engine built, as ``measure`` reads a ``Content``."""

    frame: object
    columns: list[Column]


def extract(into: Path, repo: Path = REPO) -> Path:
    """The reference commit's ``plugins`` folder, written under ``into``; its path."""
    git = shutil.which("git")
    if git is None:
        raise NoReference(f"the disclosure cost compares with the engine at commit {REFERENCE}, "
                          "read from git history, and git is not on PATH")
    done = subprocess.run([git, "-C", str(repo), "archive", "--format=tar", REFERENCE,
                           "plugins"], capture_output=True, check=False)
    if done.returncode:
        raise NoReference(
            f"the disclosure cost compares with the engine at commit {REFERENCE}, which git "
            f"could not read in {repo} (a clone of main with its history has it; a shallow "
            f"one needs `git fetch --unshallow`): {done.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / "plugins"


def built_then(policy_dir: Path, rounds: dict, work: Path) -> dict[str, list[Table]]:
    """Each agreement's tables as the reference engine builds them, each organisation alone,
    from ``rounds`` (country -> conformed round) under the policy at ``policy_dir``."""
    plugins = extract(work / "reference")
    into, out = work / "rounds.pickle", work / "then.pickle"
    into.write_bytes(pickle.dumps(rounds))
    env = {**os.environ, "PYTHONPATH": str(plugins)}  # that package alone, never today's
    subprocess.run([sys.executable, str(Path(__file__).resolve()), str(policy_dir), str(into),
                    str(out)], env=env, check=True)
    # Our own subprocess's answer, in the same run: frames and plain tuples, no project type.
    built = pickle.loads(out.read_bytes())
    return {name: [Table(frame, [Column(*c) for c in columns]) for columns, frame in tables]
            for name, tables in built.items()}


def _build(policy_dir: str, rounds_path: str, out_path: str) -> None:
    """In the subprocess: every organisation's tables, built jointly by the reference engine."""
    from disclosure_rounds import classified, tables_of

    import dissemination

    package = Path(dissemination.__file__).resolve()
    if not package.is_relative_to(Path(os.environ["PYTHONPATH"]).resolve()):
        raise SystemExit(f"the reference engine's process imported {package}, not commit "
                         f"{REFERENCE}'s package")
    from dissemination.disclosure.engine import build_contents
    from dissemination.policy import load_policy

    policy = load_policy(Path(policy_dir))
    rounds = pickle.loads(Path(rounds_path).read_bytes())  # the parent's, written above
    out = {}
    for country, df in rounds.items():
        ruleset = policy.rulesets[country]
        for name, selections in tables_of(policy, country, *classified(df, ruleset)).items():
            contents = build_contents(df, [(s, None) for s in selections], ruleset)
            out[name] = [([(o.name, o.source) for o in c.columns], c.frame) for c in contents]
    Path(out_path).write_bytes(pickle.dumps(out))


if __name__ == "__main__":
    _build(*sys.argv[1:4])
