#!/usr/bin/env bash
# Install the Debian packages the tests drive for real: Chromium (the dashboard's headless
# browser test) and the PostgreSQL and Redis servers (tests marked `postgres` and `redis`
# start their own throwaway servers from these binaries, never the system services).
#
# Idempotent: installs only what is missing, in one apt call. Uses sudo only when not root
# (CI runs as root on a fresh Debian 12 machine where only package registries are reachable).
set -euo pipefail

missing=()
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
if ! command -v postgres >/dev/null && ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
    missing+=(postgresql)
fi
command -v redis-server >/dev/null || missing+=(redis-server)
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "chromium, postgresql and redis-server already installed"
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
