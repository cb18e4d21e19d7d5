"""Fixtures for the routing core: synthetic comparisons and routers fitted on them once."""

from __future__ import annotations

import pytest

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.features import Featurizer
from hyper_ls_backend.core.router import Router
from hyper_ls_backend.core.strategies import STRATEGIES, PPMStrategy, make_strategy

from .synthetic import make_comparisons

SMALL_PPM = {"n_mixes": 40, "n_splits": 2, "n_candidates": 30}
"""PPM settings small enough to fit in well under a second on the synthetic data."""


def small_strategy(name: str, seed: int = 0):
    """A strategy by name; ``hyper`` with a small mix sample so tests stay fast."""
    if name == PPMStrategy.name:
        return PPMStrategy(seed=seed, **SMALL_PPM)
    return make_strategy(name, seed=seed)


@pytest.fixture(scope="session")
def comparisons() -> list[Comparison]:
    """160 labelled comparisons in 12 groups (the training set)."""
    return make_comparisons(160, seed=0, n_groups=12)


@pytest.fixture(scope="session")
def fresh() -> list[Comparison]:
    """120 other comparisons, 4 of them with a failed judge (the set to route)."""
    return make_comparisons(120, seed=1, n_groups=9, judge_failures=(3, 40, 41, 99))


@pytest.fixture(scope="session")
def featurizer(comparisons: list[Comparison]) -> Featurizer:
    return Featurizer().fit(comparisons)


@pytest.fixture(scope="session")
def routers(comparisons: list[Comparison]) -> dict[str, Router]:
    """One router per strategy, fitted on ``comparisons``."""
    return {name: Router(small_strategy(name)).fit(comparisons) for name in STRATEGIES}
