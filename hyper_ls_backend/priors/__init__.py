"""The router prior shipped with the package: where every new project starts.

Regenerate it with ``scripts/regenerate_prior.sh`` (see its header for the data it reads).
"""

from __future__ import annotations

from pathlib import Path

from hyper_ls_backend.core.router import Router

DEFAULT_PRIOR_PATH = Path(__file__).with_name("default.json")


def load_default_router() -> Router:
    return Router.load(DEFAULT_PRIOR_PATH)
