"""Pulling a round from the survey database, against a plain Arrow read of the same rows.

A synthetic round (the NGA contract) is stored with ``write_round`` into SQLite (a temporary
file) and PostgreSQL (its own schema, dropped afterwards), then read three ways, each run in a
fresh process (its peak RSS, VmHWM, is the read's own), median of 3:
- ``read_round``: what the pipeline does (round metadata through SQLAlchemy, rows through ADBC);
- the reference: ADBC ``SELECT * FROM site_assessments WHERE round_id = ?`` +
  ``fetch_arrow_table()``, nothing else (on PostgreSQL the id written into the query, ADBC's
  streaming COPY path);
- ``pandas.read_sql`` of the same query (how ``read_round`` read before), unless ``--no-read-sql``.
Every process imports the same modules before its clock starts. Figures:
``pull_1m_sqlite_vs_arrow``, ``pull_1m_postgres_vs_arrow`` (read_round / reference) and
``pull_1m_peak_rss_vs_arrow`` (the larger read_round peak RSS, whole process, / the round's Arrow
size, ``table.nbytes``).

    make bench   # or: PYTHONPATH=plugins .venv/bin/python bench/pull.py [--sites 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summary import Figure, record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get(
    "DISSEMINATION_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
READS = ("arrow", "read_round", "read_sql")


def _engine(url: str, schema: str) -> sa.Engine:
    options = {"connect_args": {"options": f"-c search_path={schema}"}} if schema else {}
    return sa.create_engine(url, hide_parameters=True, **options)


def _high_water_rss() -> int:
    """This process's peak RSS in bytes (VmHWM). Not ``ru_maxrss``: Linux folds the forking
    parent's peak into it at exec, so a child of a big parent reports the parent's."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("VmHWM:"))) * 1024


def _child(read: str, round_id: str) -> None:
    """One read in this (fresh) process; prints its figures as JSON. The URL comes by the
    environment, never the command line (it may carry a password)."""
    import adbc_driver_postgresql.dbapi
    import adbc_driver_sqlite.dbapi
    import pandas as pd

    from dissemination.ids import check_round_id
    from dissemination.intake.reading import read_round
    from dissemination.intake.source import SITE_TABLE

    engine = _engine(os.environ["BENCH_PULL_URL"], os.environ["BENCH_PULL_SCHEMA"])
    sql = f"SELECT * FROM {SITE_TABLE} WHERE round_id = "
    baseline = _high_water_rss()
    start, nbytes = time.perf_counter(), 0
    if read == "read_round":
        rows = len(read_round(engine, round_id)[1])
    elif read == "read_sql":
        with engine.connect() as conn:
            rows = len(pd.read_sql(sa.text(sql + ":r"), conn, params={"r": round_id},
                                   dtype_backend="pyarrow"))
    elif engine.dialect.name == "sqlite":
        with adbc_driver_sqlite.dbapi.connect(engine.url.database) as conn, \
                conn.cursor() as cursor:
            cursor.execute(sql + "?", (round_id,))
            table = cursor.fetch_arrow_table()
    else:
        uri = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with adbc_driver_postgresql.dbapi.connect(uri) as conn, conn.cursor() as cursor:
            cursor.execute(f"SET search_path TO {os.environ['BENCH_PULL_SCHEMA']}")
            # The id written in: ADBC streams a query without parameters through COPY; bound,
            # it holds the whole result in libpq (2.6x the memory): the faster reference.
            cursor.execute(sql + f"'{check_round_id(round_id, 'bench')}'")
            table = cursor.fetch_arrow_table()
    seconds = time.perf_counter() - start
    if read == "arrow":
        rows, nbytes = table.num_rows, table.nbytes
    print(json.dumps({"seconds": seconds, "rows": rows, "nbytes": nbytes,
                      "peak_rss": _high_water_rss(), "baseline_rss": baseline}))


def _measure(read: str, url: str, schema: str, round_id: str, repeat: int) -> dict:
    """Median seconds and peak RSS of ``repeat`` fresh processes doing one read each."""
    runs = []
    env = {**os.environ, "BENCH_PULL_URL": url, "BENCH_PULL_SCHEMA": schema,
           "PYTHONPATH": str(REPO / "plugins")}
    for _ in range(repeat):
        out = subprocess.run([sys.executable, __file__, "--child", read, "--round", round_id],
                             env=env, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.splitlines()[-1]))
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-read-sql", action="store_true",
                        help="skip pandas.read_sql (the old path: ~15 s and 2 GB at 1M sites)")
    parser.add_argument("--child", choices=READS, help=argparse.SUPPRESS)
    parser.add_argument("--round", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args.child, args.round)

    from dissemination.devkit.synthetic import generate_round
    from dissemination.intake.source import write_round
    from dissemination.policy import load_policy

    meta, df = generate_round(load_policy(REPO / "include").rulesets["NGA"], 1, args.sites,
                              seed=1)
    reads = [r for r in READS if not (args.no_read_sql and r == "read_sql")]
    schema = f"bench_pull_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", hide_parameters=True)
    results: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        try:
            for name, url, where in (("sqlite", f"sqlite:///{Path(tmp) / 'survey.db'}", ""),
                                     ("postgres", POSTGRES_URL, schema)):
                start = time.perf_counter()
                engine = _engine(url, where)
                write_round(engine, meta, df)
                engine.dispose()
                print(f"{name}: stored {args.sites} sites with write_round in "
                      f"{time.perf_counter() - start:.1f} s", flush=True)
                results[name] = {r: _measure(r, url, where, meta.round_id, args.repeat)
                                 for r in reads}
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()

    mb = 1 << 20
    print(f"\nround: {args.sites} sites x {df.shape[1]} columns; medians of {args.repeat} "
          "fresh processes")
    print(f"{'database':9s} {'read':11s} {'seconds':>8s} {'vs arrow':>9s} {'peak RSS':>10s} "
          f"{'RSS/arrow':>10s} {'(RSS-import)/arrow':>19s}")
    for name, by_read in results.items():
        arrow = by_read["arrow"]
        for read, r in by_read.items():
            assert r["rows"] == args.sites, (name, read, r["rows"])
            print(f"{name:9s} {read:11s} {r['seconds']:8.2f} "
                  f"{r['seconds'] / arrow['seconds']:8.2f}x {r['peak_rss'] / mb:8.0f} MB "
                  f"{r['peak_rss'] / arrow['nbytes']:9.2f}x "
                  f"{(r['peak_rss'] - r['baseline_rss']) / arrow['nbytes']:18.2f}x")
        print(f"{name:9s} Arrow size of the round (table.nbytes): {arrow['nbytes'] / mb:.0f} MB")
    figures = {
        "pull_1m_sqlite_vs_arrow": Figure(results["sqlite"]["read_round"]["seconds"]
                                          / results["sqlite"]["arrow"]["seconds"],
                                          "`read_round` / plain ADBC Arrow read, 1M sites, SQLite",
                                          "<= 2x"),
        "pull_1m_postgres_vs_arrow": Figure(results["postgres"]["read_round"]["seconds"]
                                            / results["postgres"]["arrow"]["seconds"],
                                            "`read_round` / plain ADBC Arrow read, 1M sites, "
                                            "PostgreSQL", "<= 2x"),
        "pull_1m_peak_rss_vs_arrow": Figure(max(by_read["read_round"]["peak_rss"]
                                                / by_read["arrow"]["nbytes"]
                                                for by_read in results.values()),
                                            "`read_round`'s peak RSS / the round in Arrow",
                                            "<= 3x"),
    }
    if "read_sql" in reads:
        for name, by_read in results.items():
            figures[f"pull_1m_{name}_read_sql_vs_read_round"] = Figure(
                by_read["read_sql"]["seconds"] / by_read["read_round"]["seconds"],
                f"`pandas.read_sql` (the old path) / `read_round`, time, {name}")
            figures[f"pull_1m_{name}_read_sql_rss_vs_read_round"] = Figure(
                by_read["read_sql"]["peak_rss"] / by_read["read_round"]["peak_rss"],
                f"`pandas.read_sql` / `read_round`, peak RSS, {name}")
    figures = {key: Figure(round(f.value, 3), f.about, f.goal) for key, f in figures.items()}
    if args.sites != 1_000_000:
        print(f"(--sites {args.sites}: figures printed, not recorded)")
    else:
        record(**figures)
    for key, f in figures.items():
        print(f"{key} = {f.value:.2f}")


if __name__ == "__main__":
    main()
