#!/usr/bin/env bash
# Install a real Label Studio server into ./.venv-ls for the end-to-end tests.
#
# Label Studio is a separate service with a large, pinned dependency tree (Django, ...),
# so it gets its own virtual environment instead of sharing ./.venv with the backend.
# Idempotent: does nothing when the pinned version is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${LS_VENV:-.venv-ls}"
VERSION="1.23.2"

installed="$("$VENV/bin/python" -c \
    'from importlib.metadata import version; print(version("label-studio"))' 2>/dev/null || true)"
if [[ "$installed" == "$VERSION" ]]; then
    echo "label-studio $VERSION already installed in $VENV"
    exit 0
fi

"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "label-studio==$VERSION"
echo "installed label-studio $VERSION in $VENV"
