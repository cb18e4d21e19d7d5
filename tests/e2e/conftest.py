"""End-to-end fixtures: a real Label Studio server (see label_studio.py)."""

import pytest

from e2e.label_studio import label_studio, register_marker

__all__ = ["label_studio"]


def pytest_configure(config: pytest.Config) -> None:
    register_marker(config)
