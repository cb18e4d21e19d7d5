"""Cost accounting from the price table."""

from __future__ import annotations

import logging

import pytest

from hyper_ls_backend.lm import Price, PriceTable


def test_dated_snapshots_use_their_alias_price() -> None:
    table = PriceTable()

    assert table.price("claude-haiku-4-5-20251001") == Price(1.0, 5.0)
    assert table.cost("claude-sonnet-4-6", 1_000_000, 1_000_000) == pytest.approx(18.0)


def test_unknown_models_cost_zero_and_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    table = PriceTable()

    with caplog.at_level(logging.WARNING):
        costs = [table.cost("llama-3-8b-instruct", 1000, 1000) for _ in range(3)]

    assert costs == [0.0, 0.0, 0.0]
    assert caplog.text.count("llama-3-8b-instruct") == 1


def test_batch_calls_cost_half_the_listed_price() -> None:
    table = PriceTable()

    listed = table.cost("claude-sonnet-4-6", 1_000_000, 1_000_000)
    batched = table.cost("claude-sonnet-4-6", 1_000_000, 1_000_000, batch=True)

    assert batched == pytest.approx(listed / 2) == pytest.approx(9.0)
