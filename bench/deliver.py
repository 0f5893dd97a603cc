"""A batch's deliveries a few at once (``DISSEMINATION_DELIVERY_THREADS``) against one after
another (the reference), in the same run, on the same packages and server.

Each delivery is the real one (``deliver``: claim in a SQLite ledger, upload under a
temporary name to a real OpenSSH sshd, rename, read back, confirm). Partners' servers are far
away: between client and sshd a TCP link delays every byte by half of ``--rtt-ms`` each way (a
WAN's round trips, not its bandwidth limit, since each partner's own link is the narrow one). Each
repetition delivers to a fresh ledger and an emptied server. Figures, medians of 3:

- ``deliver_threads_speedup``: one after another / ``--threads`` at once, at ``--rtt-ms``;
- ``deliver_threads_speedup_loopback``: the same with no delay (what threads cost or gain on
  this machine's cores alone);
- ``deliver_ms_per_delivery``: at ``--rtt-ms``, with threads;
- ``deliver_round_trips``: round trips a delivery waits for, one after another: what the delay
  adds to each, divided by the round trip (TCP and SSH handshakes, login, SFTP requests);
- ``deliver_round_trips_kept_session`` and ``deliver_ms_per_delivery_kept_session``: the same
  with the batch's sessions kept open (``sftp.Sessions``, as the ``deliver`` task does): here
  every delivery goes to one server, as an organisation's mostly do.

    make bench   # or: PYTHONPATH=plugins .venv/bin/python bench/deliver.py [--rtt-ms 100]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import sys
import tempfile
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from policies import build_policy  # noqa: E402
from summary import Figure, median_seconds, record  # noqa: E402

NOW = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


class LatencyLink:
    """A TCP forwarder to ``127.0.0.1:port`` that holds every chunk ``delay`` seconds before
    passing it on, in order, in both directions."""

    def __init__(self, port: int, delay: float):
        self.upstream, self.delay = port, delay
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._connection, "127.0.0.1", 0), self.loop).result()
        self.port = self.server.sockets[0].getsockname()[1]

    async def _connection(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer),
                             return_exceptions=True)

    async def _pump(self, reader, writer) -> None:
        loop, held = asyncio.get_running_loop(), asyncio.Queue()

        async def pass_on():
            while True:
                due, data = await held.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(pass_on())
        try:
            while data := await reader.read(1 << 16):
                held.put_nowait((loop.time() + self.delay, data))
        finally:
            held.put_nowait((loop.time() + self.delay, b""))
            await sender


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt-ms", type=float, default=100,
                        help="round trip to a partner's server (default 100: another continent)")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--agreements", type=int, default=16)
    parser.add_argument("--sites", type=int, default=20_000)
    args = parser.parse_args()

    import sqlalchemy as sa

    from dissemination.classification import Urgency
    from dissemination.delivery import deliver, deliver_each
    from dissemination.delivery.sftp_sessions import Sessions
    from dissemination.devkit.local_sftp import LocalSftpServer
    from dissemination.devkit.synthetic import generate_round
    from dissemination.ledger.migrations import open_upgraded
    from dissemination.policy import load_policy
    from dissemination.runs import PackagingRun, new_password, package_deliveries, plan_deliveries

    with tempfile.TemporaryDirectory(prefix="bench-deliver-") as tmp, \
            LocalSftpServer(Path(tmp) / "sftp", engine="openssh") as server:
        tmp = Path(tmp)
        policy = load_policy(build_policy(tmp, args.agreements))
        meta, df = generate_round(policy.rulesets["NGA"], 1, args.sites, seed=11)
        plans = plan_deliveries(policy, meta, list(df.columns), Urgency.MEDIUM,
                                today=NOW.date())
        ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp / 'packaging.db'}"))
        # one generated password per run: a typed one must pass the strength check since #30
        password = new_password()
        deliveries = package_deliveries(df, meta, plans, policy, tmp / "packages",
                                        lambda variable: password, ledger, PackagingRun(NOW))
        folders = {d.destination.split(":", 1)[1] for d in deliveries}
        size = sum(Path(d.package_path).stat().st_size for d in deliveries)
        far = LatencyLink(server.port, args.rtt_ms / 2000)
        runs = itertools.count()

        def deliver_all(threads: int, port: int, keep: bool = False) -> None:
            target = replace(server.target(), port=port)
            shutil.rmtree(server.root)
            for folder in folders:
                (server.root / folder).mkdir(parents=True)
            ledger = open_upgraded(sa.create_engine(f"sqlite:///{tmp / f'run{next(runs)}.db'}"))
            with Sessions() as kept:
                outcomes = list(deliver_each(deliveries, lambda d: deliver(
                    d, lambda conn: target, policy, ledger, NOW, "bench",
                    sessions=kept if keep else None), threads))
            failed = [o for _, o in outcomes if isinstance(o, Exception)]
            if failed or len(ledger.all()) != len(deliveries):
                raise RuntimeError(f"{len(failed)} deliveries failed: {failed[:1]}")

        serial_far = median_seconds(lambda: deliver_all(1, far.port))
        threads_far = median_seconds(lambda: deliver_all(args.threads, far.port))
        serial_near = median_seconds(lambda: deliver_all(1, server.port))
        threads_near = median_seconds(lambda: deliver_all(args.threads, server.port))
        kept_serial_far = median_seconds(lambda: deliver_all(1, far.port, keep=True))
        kept_threads_far = median_seconds(lambda: deliver_all(args.threads, far.port, keep=True))
        kept_serial_near = median_seconds(lambda: deliver_all(1, server.port, keep=True))
    n = len(deliveries)
    print(f"{n} deliveries ({size / 2**20:.1f} MB in all) at {args.rtt_ms:.0f} ms round trip: "
          f"{serial_far:.2f} s one after another, {threads_far:.2f} s {args.threads} at once "
          f"({serial_far / threads_far:.2f}x, {threads_far / n * 1000:.0f} ms per delivery)")
    print(f"on loopback: {serial_near:.2f} s one after another, {threads_near:.2f} s "
          f"{args.threads} at once ({serial_near / threads_near:.2f}x)")
    round_trips = (serial_far - serial_near) / n / (args.rtt_ms / 1000)
    print(f"each delivery waits for {round_trips:.1f} round trips")
    kept_round_trips = (kept_serial_far - kept_serial_near) / n / (args.rtt_ms / 1000)
    print(f"sessions kept for the batch: {kept_threads_far / n * 1000:.0f} ms per delivery "
          f"{args.threads} at once, {kept_round_trips:.1f} round trips each")
    far = f"{n} deliveries, {args.rtt_ms:g} ms round trip"
    record(deliver_threads_speedup=Figure(round(serial_far / threads_far, 2),
                                          f"one after another / {args.threads} at once, {far}"),
           deliver_threads_speedup_loopback=Figure(round(serial_near / threads_near, 2),
                                                   f"one after another / {args.threads} at once, "
                                                   "loopback, no delay"),
           deliver_ms_per_delivery=Figure(round(threads_far / n * 1000, 1),
                                          f"ms per delivery, {args.threads} at once, {far}"),
           deliver_round_trips=Figure(round(round_trips, 1),
                                      "round trips a delivery waits for (added time / RTT)"),
           deliver_round_trips_kept_session=Figure(round(kept_round_trips, 1),
                                                   "round trips per delivery, the batch's "
                                                   "sessions kept open"),
           deliver_ms_per_delivery_kept_session=Figure(
               round(kept_threads_far / n * 1000, 1),
               f"ms per delivery, sessions kept, {args.threads} at once, {far}"))


if __name__ == "__main__":
    main()
