"""Synthetic labelled comparisons with a stated generative process: a stress test, not data.

``synthetic_campaign(n, seed)`` draws ``n`` comparisons whose judge errs in a pattern the
shipped MT-Bench prior does not know, to check that online refitting learns when there is
something to learn. Every draw comes from ``numpy.random.default_rng(seed)``:

* **Prompts and groups.** Comparisons come four to a prompt (``meta.group``); each prompt
  gets one of the eight MT-Bench categories uniformly (``meta.category``) and a text of
  10-79 words.
* **Responses.** Two texts of 20-599 words each (uniform), words drawn Zipf(1.3) from a
  5,000-word vocabulary (the route-throughput benchmark's generator, ``zipf_text``).
* **Human.** One vote, A or B with probability 1/2 each, independent of everything else:
  it is the truth here (no ties, no annotator noise).
* **Judge.** Always decisive; order-consistent with probability 0.8. It is wrong (picks
  the other side) with probability ``sigmoid(-2.2 + 0.4 * inconsistent + 2.6 * blind)``,
  where ``blind`` is "the category is math or extraction and the longer response has at
  least 300 words": about 10% wrong elsewhere (14% when inconsistent), 60-69% in the blind
  cell, which holds about 19% of the comparisons and about half of the judge's errors.

The MT-Bench prior believes the opposite of the blind cell (math and extraction lower its
score, a long longer response slightly lowers it) and that order-inconsistency matters
more than it does here. What the router can see of ``blind`` is additive: its
``category=...`` and ``longer_len`` bin features (the top ``longer_len`` bin starts at 249
words on the prior's MT-Bench scale), not their interaction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hyper_ls_backend.core.comparison import Comparison

VOCABULARY = np.array([f"w{i}" for i in range(5_000)])
CATEGORIES = (
    "coding",
    "extraction",
    "humanities",
    "math",
    "reasoning",
    "roleplay",
    "stem",
    "writing",
)
BLIND_CATEGORIES = ("math", "extraction")
LONG_WORDS = 300
"""The judge's blind cell: a blind category and a longer response of at least this many words."""
PER_GROUP = 4
CONSISTENT_SHARE = 0.8
LOGIT_BASE, LOGIT_INCONSISTENT, LOGIT_BLIND = -2.2, 0.4, 2.6


def zipf_text(rng: np.random.Generator, low: int, high: int) -> str:
    """``low`` to ``high - 1`` words, Zipf(1.3) over ``VOCABULARY``."""
    return " ".join(VOCABULARY[rng.zipf(1.3, rng.integers(low, high)) % len(VOCABULARY)])


def judge_error_probability(category: str, longer_words: int, consistent: bool) -> float:
    """The stated model of where the synthetic judge is wrong."""
    blind = category in BLIND_CATEGORIES and longer_words >= LONG_WORDS
    logit = LOGIT_BASE + LOGIT_INCONSISTENT * (not consistent) + LOGIT_BLIND * blind
    return float(1.0 / (1.0 + np.exp(-logit)))


def synthetic_records(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` comparison records drawn as the module docstring states."""
    rng = np.random.default_rng(seed)
    records: list[dict[str, Any]] = []
    prompt, category = "", ""
    for i in range(n):
        group = i // PER_GROUP
        if i % PER_GROUP == 0:
            category = str(CATEGORIES[int(rng.integers(len(CATEGORIES)))])
            prompt = zipf_text(rng, 10, 80)
        response_a, response_b = zipf_text(rng, 20, 600), zipf_text(rng, 20, 600)
        longer = max(len(response_a.split()), len(response_b.split()))
        human = "A" if rng.random() < 0.5 else "B"
        consistent = bool(rng.random() < CONSISTENT_SHARE)
        wrong = rng.random() < judge_error_probability(category, longer, consistent)
        records.append(
            {
                "id": f"syn-{seed}-{i:05d}",
                "prompt": prompt,
                "response_a": response_a,
                "response_b": response_b,
                "human": [human],
                "judge": {
                    "label": ("B" if human == "A" else "A") if wrong else human,
                    "consistent": consistent,
                    "model": "synthetic-judge",
                },
                "meta": {
                    "group": f"s{seed}-g{group:05d}",
                    "category": category,
                    "synthetic": True,
                },
            }
        )
    return records


def synthetic_campaign(n: int, seed: int) -> list[Comparison]:
    return [Comparison.model_validate(r) for r in synthetic_records(n, seed)]
