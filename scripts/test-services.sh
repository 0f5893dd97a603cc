#!/usr/bin/env bash
# What `make test` needs beyond the venv, made ready: the Debian packages the tests run (real
# OpenSSH, 7-Zip, Chromium, Redis, docker-compose for `config`), installed when root and missing,
# and PostgreSQL and Redis started when down. Not root: one line naming what to install.
# CI (.ci/run) and a developer's `make test` go through this same script.
set -euo pipefail

need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v 7z >/dev/null 2>&1 || need+=(p7zip-full)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v pg_isready >/dev/null 2>&1 || need+=(postgresql-client)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
# Debian's Chromium for the Dissemination page's browser test (Playwright drives it; no download).
[ -x /usr/bin/chromium ] || need+=(chromium fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "make test needs: apt-get install ${need[*]} (as root), then make test again" >&2
    exit 1
  fi
  echo "test-services: apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The tests start their own sshd on loopback: no system one left running on port 22.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now ssh >/dev/null 2>&1 || true; fi
fi

# PostgreSQL: the machine's cluster on 127.0.0.1:5432 (trust auth, database `test`).
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  cluster=$(ls /etc/postgresql 2>/dev/null | head -n1)
  if [ -z "$cluster" ] || [ "$(id -u)" != 0 ]; then
    echo "make test needs PostgreSQL on 127.0.0.1:5432 (trust auth, database test); start it" >&2
    exit 1
  fi
  echo "test-services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$cluster" main start
  for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
# Redis on 127.0.0.1:6379: the Celery test's broker (nothing kept on disk).
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "test-services: starting Redis"
  redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
fi
