#!/usr/bin/env bash
# Install Debian's Chromium for the dashboard's headless-browser test.
#
# Idempotent: does nothing when /usr/bin/chromium is there. Uses sudo only when not root
# (CI runs as root on a fresh Debian 12 machine where only package registries are reachable).
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi

if [[ "$(id -u)" -eq 0 ]]; then
    as_root=()
else
    as_root=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y --no-install-recommends chromium
echo "installed $(/usr/bin/chromium --version 2>/dev/null)"
