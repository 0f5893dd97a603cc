"""SFTP upload speed against OpenSSH's own ``sftp`` client, same file, same server, same run.

The server is a real OpenSSH sshd on loopback (``LocalSftpServer``), the host key pinned on both
sides. Three figures, medians of 3:
- ``sftp_vs_openssh``: the project's transfer (large pipelined requests, AES-GCM) / ``sftp put``;
- ``sftp_paramiko_default_vs_openssh``: paramiko's stock ``put`` / ``sftp put`` (what it was);
- ``sftp_delivery_vs_openssh``: the whole ``upload`` (temp name, read-back SHA-256, rename) /
  ``sftp put``: verification reads every byte back, so this one is about half.

    make bench   # or: PYTHONPATH=plugins .venv/bin/python bench/sftp.py [MB]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summary import Figure, median_seconds, record  # noqa: E402


def main(megabytes: int = 200) -> None:
    from dissemination.delivery import sftp, sftp_sessions
    from dissemination.devkit.local_sftp import LocalSftpServer

    with (tempfile.TemporaryDirectory() as tmp,
          LocalSftpServer(Path(tmp) / "server", engine="openssh") as server):
        payload = Path(tmp) / "package.zip"
        with open(payload, "wb") as f:
            for _ in range(megabytes):
                f.write(os.urandom(1 << 20))  # AES output: incompressible, like a package
        (server.root / "in").mkdir()
        known = Path(tmp) / "known_hosts"
        known.write_text(f"[127.0.0.1]:{server.port} {server.host_key}\n")
        batch = Path(tmp) / "batch"
        batch.write_text(f"put {payload} in/openssh.zip\n")
        openssh = ["sftp", "-q", "-b", str(batch), "-P", str(server.port),
                   "-i", str(server.client_key_path), "-o", f"UserKnownHostsFile={known}",
                   "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                   f"{server.user}@127.0.0.1"]
        target = server.target()

        def transfer(client) -> None:
            with sftp._opened(client, "in/ours.zip", "wb", sftp_sessions.REQUEST_SIZE) as remote:
                sftp._send(remote, payload)

        def with_sftp(action):
            client = sftp_sessions._connect(target)
            try:
                action(client.open_sftp())
            finally:
                client.close()

        t_openssh = median_seconds(lambda: subprocess.run(openssh, check=True,
                                                          stdout=subprocess.DEVNULL))
        t_ours = median_seconds(lambda: with_sftp(transfer))
        t_default = median_seconds(lambda: with_sftp(
            lambda s: s.put(str(payload), "in/default.zip")))
        t_delivery = median_seconds(lambda: sftp.upload(target, payload, "in"))
    mb = megabytes
    print(f"OpenSSH sftp put, {mb} MB:          {t_openssh:6.2f} s  {mb / t_openssh:6.0f} MB/s")
    for name, seconds in (("project transfer", t_ours), ("paramiko default put", t_default),
                          ("upload + read-back SHA-256", t_delivery)):
        print(f"{name:34s} {seconds:6.2f} s  {mb / seconds:6.0f} MB/s  "
              f"{t_openssh / seconds:4.2f}x OpenSSH")
    record(sftp_vs_openssh=Figure(round(t_openssh / t_ours, 3),
                                  f"upload speed / OpenSSH's `sftp put`, {megabytes} MB, same sshd",
                                  ">= 0.9x"),
           sftp_paramiko_default_vs_openssh=Figure(round(t_openssh / t_default, 3),
                                                   "paramiko's stock `put` speed / `sftp put`"),
           sftp_delivery_vs_openssh=Figure(round(t_openssh / t_delivery, 3),
                                           "whole upload with read-back, speed / `sftp put`"))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
