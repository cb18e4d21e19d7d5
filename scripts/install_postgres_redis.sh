#!/usr/bin/env bash
# Install Debian's PostgreSQL and Redis servers for the tests marked `postgres` and `redis`.
#
# The tests start their own throwaway servers from these binaries (a free loopback port, a
# temporary data directory); they never use the system services the packages set up.
# Idempotent: installs only what is missing. Uses sudo only when not root (CI runs as root
# on a fresh Debian 12 machine where only package registries are reachable).
set -euo pipefail

missing=()
if ! command -v postgres >/dev/null && ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
    missing+=(postgresql)
fi
if ! command -v redis-server >/dev/null; then
    missing+=(redis-server)
fi
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "postgresql and redis-server already installed"
    exit 0
fi

if [[ "$(id -u)" -eq 0 ]]; then
    as_root=()
else
    as_root=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
echo "installed ${missing[*]}"
