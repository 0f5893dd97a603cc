"""Packaging one round for many deliveries: forked workers (every core) against one process
(``workers=1``, the reference), in the same run.

The round is 100k synthetic sites staged as the pipeline stages it (conformed, Parquet); the
policy is the tests' own with 1,000 agreements of 1,000 organisations (``policies.build_policy``);
the first ``--deliveries`` medium-urgency plans for the round are packaged, each run in a fresh
interpreter as the ``package`` task is (read the staged round, ``package_deliveries``), so its
peak RSS is its own. The agreements are copies of the tests' three, so organisations alike
receive the same tables, which ``package_deliveries`` builds and deflates once
(``packaging.alike``); the worst case, every organisation's tables its own, is measured too, and is
the reference of the speed-up. Figures: ms per delivery, the speed-up, the peak RSS of the parent
and of the largest worker (shared copy-on-write pages count in both), and the CPU time per delivery
(other work on the machine lowers the speed-up but not the CPU time).

    make bench   # or: PYTHONPATH=plugins .venv/bin/python bench/package.py [--deliveries 200]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from datetime import UTC, date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from policies import build_policy  # noqa: E402
from summary import Figure, record  # noqa: E402

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
PASSWORD = "bench-package-password-0123456789"


def prepare(folder: Path, sites: int, deliveries: int) -> Path:
    """The staged round, the policy and the plans, on disk for the runs."""
    from dissemination.classification import Urgency
    from dissemination.devkit.synthetic import generate_round
    from dissemination.policy import load_policy
    from dissemination.runs import plan_deliveries, stage_round

    include = build_policy(folder, 1000)
    policy = load_policy(include)
    meta, df = generate_round(policy.rulesets["NGA"], 1, sites, seed=1)
    staged = stage_round(meta, df, policy, folder / "round" / "round.arrow")
    plans = plan_deliveries(policy, meta, list(df.columns), Urgency.MEDIUM,
                                  today=date(2026, 11, 2))
    plans = [p for p in plans if p.status == "planned"][:deliveries]
    assert len(plans) == deliveries, f"only {len(plans)} deliveries planned"
    job = folder / "job.pickle"
    job.write_bytes(pickle.dumps((str(include), staged, plans)))
    return job


def run(job: Path, workers: int, distinct: bool = False) -> dict:
    """One ``package`` task: read the staged round, package every plan (a fresh interpreter).
    ``distinct``: as if no two organisations received the same tables (``packaging.alike`` groups
    none), the worst case; the bench's agreements are copies of three templates."""
    import sqlalchemy as sa

    from dissemination.intake import staging
    from dissemination.intake.source import RoundMeta
    from dissemination.ledger.migrations import open_upgraded
    from dissemination.policy import load_policy
    from dissemination.runs import PackagingRun, package_deliveries, packaging

    if distinct:
        packaging.alike = lambda organisations, holding=None: [[plans] for plans in organisations]
    include, staged, plans = pickle.loads(job.read_bytes())
    policy = load_policy(Path(include))
    name = f"{workers}{'-distinct' if distinct else ''}"
    out_dir = job.parent / f"packages-{name}"
    ledger = open_upgraded(sa.create_engine(f"sqlite:///{job.parent / f'ledger-{name}.db'}"))
    df = staging.read_staged(staged["path"])
    start, cpu = time.perf_counter(), cpu_seconds()
    done = package_deliveries(df, RoundMeta.from_xcom(staged), plans, policy, out_dir,
                                    lambda variable: PASSWORD, ledger,
                                    PackagingRun(NOW, workers=workers))
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    assert [d.status for d in done] == ["packaged"] * len(plans)
    return {"seconds": seconds, "cpu_seconds": cpu, "hashes": [d.content_sha256 for d in done],
            "round_mb": df.memory_usage(deep=True).sum() / 1e6,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "zip_mb": sum(Path(d.package_path).stat().st_size for d in done) / 1e6,
            "sample": done[0].package_path}


def cpu_seconds() -> float:
    """CPU time of this process and its finished workers: the work, whatever else runs."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def in_fresh_interpreter(job: Path, workers: int, distinct: bool = False) -> dict:
    out = subprocess.run([sys.executable, __file__, "--run", str(job), "--workers", str(workers),
                          *(["--distinct"] if distinct else [])],
                         check=True, capture_output=True, text=True, env=os.environ)
    return json.loads(out.stdout.splitlines()[-1])


def deflate_levels(sample: str) -> tuple[str, float]:
    """Why packages deflate with zlib-ng at level 5: its time and size against zlib's default
    (level 6), zlib-ng's level 6 (the same size as zlib's) and the faster levels (larger
    files), on one package's CSV."""
    import pyzipper
    from zlib_ng import zlib_ng

    from dissemination.package import archive as package

    with pyzipper.AESZipFile(sample) as zf:
        zf.setpassword(PASSWORD.encode())
        csv = zf.read("data.csv")
    line, seconds, sizes = [], {}, {}
    for name, module, level in (("zlib", zlib, 6), ("zlib-ng", zlib_ng, 6),
                                ("zlib-ng", zlib_ng, 5), ("zlib-ng", zlib_ng, 3)):
        start = time.perf_counter()
        for _ in range(3):
            size = len(module.compress(csv, level))
        seconds[name, level], sizes[name, level] = (time.perf_counter() - start) / 3, size
        line.append(f"{name} level {level}: {seconds[name, level] * 1000:5.0f} ms, "
                    f"{size / 1e6:5.2f} MB")
    speed = seconds["zlib", 6] / seconds["zlib-ng", package.DEFLATE_LEVEL]
    size = sizes["zlib-ng", package.DEFLATE_LEVEL] / sizes["zlib", 6]
    return (f"deflate of one {len(csv) / 1e6:.1f} MB CSV: " + "; ".join(line)
            + f" (the packages' zlib-ng level {package.DEFLATE_LEVEL}: {speed:.2f}x zlib's "
              f"default's speed, {size:.3f}x its size)", speed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, default=100_000)
    parser.add_argument("--deliveries", type=int, default=200)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--distinct", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run(args.run, args.workers, args.distinct)))
        return
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        job = prepare(Path(tmp), args.sites, args.deliveries)
        serial = in_fresh_interpreter(job, 1, distinct=True)
        parallel = in_fresh_interpreter(job, cores, distinct=True)
        alike = in_fresh_interpreter(job, cores)
        levels, zlib_ng_speed = deflate_levels(parallel["sample"])
    assert parallel["hashes"] == serial["hashes"] == alike["hashes"], \
        "parallel packages differ from serial ones"
    n = args.deliveries
    ms_serial, ms_parallel, ms_alike = (r["seconds"] * 1000 / n
                                        for r in (serial, parallel, alike))
    print(f"round: {args.sites} sites ({serial['round_mb']:.0f} MB in memory), {n} deliveries "
          f"to {n} organisations, {serial['zip_mb']:.0f} MB of packages")
    for name, r, ms in (("every organisation's tables its own, 1 process", serial, ms_serial),
                        (f"the same, {cores} workers", parallel, ms_parallel),
                        (f"as planned: {len(set(alike['hashes']))} distinct table(s), "
                         f"{cores} workers", alike, ms_alike)):
        print(f"{name:50s} {r['seconds']:6.1f} s {ms:6.1f} ms per delivery (CPU "
              f"{r['cpu_seconds'] * 1000 / n:6.1f} ms)  peak RSS {r['peak_mb']:4.0f} MB "
              f"(largest worker {r['worker_peak_mb']:4.0f} MB)")
    print(f"speed-up: {ms_serial / ms_parallel:4.2f}x on {cores} cores (CPU time "
          f"{parallel['cpu_seconds'] / serial['cpu_seconds']:4.2f}x the serial; a busy machine "
          "lowers the speed-up, not this)")
    print(levels)
    print(f"organisations alike (the bench's agreements are copies of templates: tables built "
          f"and deflated once): {ms_parallel / ms_alike:4.2f}x faster")
    own = f"every organisation's tables its own, {args.sites:,} sites"
    record(package_ms_per_delivery=Figure(round(ms_parallel, 1),
                                          f"ms per delivery, {cores} workers, {own}"),
           package_alike_ms_per_delivery=Figure(round(ms_alike, 1),
                                                f"ms per delivery, {cores} workers, organisations "
                                                "alike sharing tables"),
           package_serial_ms_per_delivery=Figure(round(ms_serial, 1),
                                                 f"ms per delivery, one process, {own}"),
           package_parallel_speedup=Figure(round(ms_serial / ms_parallel, 2),
                                           f"one process / {cores} forked workers", "parallel"),
           package_peak_rss_mb=Figure(round(parallel["peak_mb"]), "MB, parent's peak RSS"),
           package_worker_peak_rss_mb=Figure(round(parallel["worker_peak_mb"]),
                                             "MB, largest worker's peak RSS"),
           deflate_zlib_ng_vs_zlib=Figure(round(zlib_ng_speed, 2),
                                          "zlib-ng level 5 speed / zlib's default level"))


if __name__ == "__main__":
    main()
