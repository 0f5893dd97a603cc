#!/bin/sh
# What `make` needs before it creates the venv, checked first: one line naming what is missing
# (not a traceback after minutes of installs). Usage: scripts/prerequisites.sh PYTHON
# OpenSSH is not needed: the demo falls back to a pure-Python SFTP server (the tests' .ci/run
# installs OpenSSH). 7-Zip only opens packages by hand: a note, not an error.
python="${1:-python3.11}"
if ! command -v "$python" >/dev/null 2>&1; then
  echo "make demo needs $python (Python 3.11); install it (Debian: apt-get install python3.11-venv) or pass PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' 2>/dev/null; then
  echo "make demo needs Python 3.11 or later; $python is $("$python" -V 2>&1) (pass PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
# Debian ships `venv` without ensurepip (in python3.11-venv): `-m venv` then fails half-way.
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "make demo needs $python with venv (Debian: apt-get install python3.11-venv)" >&2
  exit 1
fi
if ! command -v 7z >/dev/null 2>&1; then
  echo "note: 7z not found; only needed to open packages by hand (Debian: apt-get install p7zip-full)" >&2
fi
exit 0
