"""Label Studio tests: parsing runs anywhere; `label_studio` tests use a real server."""

import pytest
from e2e.label_studio import label_studio, register_marker

__all__ = ["label_studio"]


def pytest_configure(config: pytest.Config) -> None:
    register_marker(config)
