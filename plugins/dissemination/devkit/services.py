"""Airflow's own services (api-server, scheduler, dag-processor...) as child processes, for
``make ui`` and the tests: each command in its own process group, stopped as a whole; polling
with a deadline instead of sleeping.

LocalExecutor workers ignore SIGTERM and ``airflow standalone`` orphans its children when only its
own PID is signalled, hence process groups (see NOTES.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx


def wait_for(what: str, check, timeout: float, every: float = 2.0):
    """Poll ``check`` until it returns something truthy; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def airflow_path() -> str:
    """PATH with this interpreter's ``airflow`` first (components start each other by name)."""
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def api_ok(api, path: str) -> bool:
    """Whether ``api`` (an ``httpx.Client``) answers ``path`` with 200; False while it is down."""
    try:
        return api.get(path).status_code == 200
    except httpx.HTTPError:
        return False


class Service:
    """One ``airflow`` command in its own process group, output to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        airflow = Path(sys.executable).with_name("airflow")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("w") as out:
            self.proc = subprocess.Popen([str(airflow), *self.args], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig, grace in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=grace)
                # Workers may outlive the parent: make sure the group is empty.
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc = None

    def tail(self, chars: int = 3000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- airflow {' '.join(self.args)} ---\n{text[-chars:]}"


def stop_all(services: list[Service]) -> None:
    """Stop services at once (each waits out its own grace periods)."""
    with ThreadPoolExecutor(max(1, len(services))) as pool:
        list(pool.map(Service.stop, services))
