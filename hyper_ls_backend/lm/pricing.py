"""What LM calls cost, from a per-model price table in USD per million tokens.

A call made through a batch API (Anthropic's Message Batches) costs ``BATCH_DISCOUNT`` of
the listed price, input and output tokens alike.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float


DEFAULT_PRICES: Mapping[str, Price] = {
    # Claude API list prices (USD / million tokens, standard tier, no caching), Nov 2026.
    "claude-fable-5-1": Price(10.0, 50.0),
    "claude-opus-5-5": Price(4.0, 20.0),
    "claude-opus-5": Price(5.0, 25.0),
    "claude-sonnet-5-5": Price(2.0, 10.0),
    "claude-sonnet-5": Price(2.0, 10.0),
    "claude-opus-4-6": Price(5.0, 25.0),
    "claude-sonnet-4-6": Price(3.0, 15.0),
    "claude-opus-4-5": Price(5.0, 25.0),
    "claude-sonnet-4-5": Price(3.0, 15.0),
    "claude-haiku-4-5": Price(1.0, 5.0),
    "claude-opus-4-1": Price(15.0, 75.0),
}
"""Models not listed (self-hosted ones, or Claude models priced later) cost 0: pass your own
table to ``PriceTable`` to charge them."""

BATCH_DISCOUNT = 0.5
"""Anthropic's Message Batches API charges half the standard price per token."""

_SNAPSHOT_SUFFIX = re.compile(r"-\d{8}$")


class PriceTable:
    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self._prices = dict(DEFAULT_PRICES if prices is None else prices)
        self._warned: set[str] = set()

    def price(self, model: str) -> Price | None:
        """The model's price; a dated snapshot (``...-20251001``) falls back to its alias."""
        found = self._prices.get(model)
        if found is None:
            found = self._prices.get(_SNAPSHOT_SUFFIX.sub("", model))
        return found

    def cost(
        self, model: str, input_tokens: int, output_tokens: int, *, batch: bool = False
    ) -> float:
        """USD for one call's tokens; ``batch``: made through a batch API, at its discount."""
        price = self.price(model)
        if price is None:
            if model not in self._warned:
                self._warned.add(model)
                log.warning("no price for model %r: its calls are costed at $0", model)
            return 0.0
        listed = (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1e6
        return listed * BATCH_DISCOUNT if batch else listed
