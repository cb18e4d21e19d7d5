"""Small, deterministic synthetic comparisons whose features differ from row to row.

The judge is right far more often when it is order-consistent, so the learned strategies
have a real signal to find. Every comparison has a ``meta.group`` (its prompt) and a
``meta.category``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hyper_ls_backend.core.comparison import Comparison

CATEGORIES = ("writing", "coding", "math", "reasoning", "roleplay")
VOCABULARY = [
    "the",
    "model",
    "answer",
    "explains",
    "each",
    "step",
    "with",
    "care",
    "and",
    "gives",
    "a",
    "short",
    "example",
    "then",
    "it",
    "checks",
    "the",
    "result",
    "against",
    "the",
    "question",
    "before",
    "it",
    "closes",
    "with",
    "a",
    "summary",
    "of",
    "what",
    "matters",
    "most",
    "because",
    "readers",
    "want",
    "clear",
    "reasons",
    "simple",
    "words",
    "and",
    "a",
    "direct",
    "reply",
    "to",
    "their",
    "request",
]
ENTITIES = ("Paris", "London", "Python", "Einstein", "Tokyo", "1905", "42", "3.14", "Amazon")
PROMPTS = (
    "Write a short poem about the sea.",
    "Explain how a hash map works and when to use one.",
    "What is the derivative of x squared times sine of x?",
    "Plan a three day trip to Tokyo on a small budget for two students who like food.",
    "Pretend you are a pirate and describe your ship.",
    "def add(a, b): return a + b  # why does this fail for strings?",
    "Summarise the causes of the French Revolution in five bullet points.",
    "Is it safe to mix bleach and vinegar when cleaning a bathroom?",
)


def response_text(rng: np.random.Generator, n_words: int, style: int) -> str:
    """``n_words`` words from a shared vocabulary, with entities, and code or a list by style."""
    picked = rng.choice(len(VOCABULARY), size=max(n_words, 1))
    tokens = [VOCABULARY[j] for j in picked]
    for position in rng.choice(len(tokens), size=min(3, len(tokens)), replace=False):
        tokens[position] = ENTITIES[int(rng.integers(len(ENTITIES)))]
    text = " ".join(tokens[:n_words])
    if style == 1:
        text += "\n```python\ndef solve(x):\n    return x * 2\n```"
    elif style == 2:
        text = "Here is a list:\n- " + "\n- ".join(text.split(" and "))
    return text


def comparison_record(i: int, rng: np.random.Generator, n_groups: int) -> dict[str, Any]:
    group = i % n_groups
    len_a = int(rng.choice([3, 8, 20, 45, 90, 180]) + rng.integers(0, 6))
    len_b = int(rng.choice([3, 8, 20, 45, 90, 180]) + rng.integers(0, 6))
    better = "A" if (len_a >= len_b) == (rng.random() < 0.75) else "B"
    votes = [better if rng.random() < 0.8 else rng.choice(["A", "B", "tie"])]
    votes += [better] * int(rng.integers(0, 3))
    consistent = bool(rng.random() < 0.75)
    right = rng.random() < (0.9 if consistent else 0.35)
    wrong = "B" if votes[0] == "A" else "A"
    return {
        "id": f"c{i:04d}",
        "prompt": f"{PROMPTS[group % len(PROMPTS)]} (prompt {group})",
        "response_a": response_text(rng, len_a, int(rng.integers(0, 4))),
        "response_b": response_text(rng, len_b, int(rng.integers(0, 4))),
        "human": [str(v) for v in votes],
        "judge": {
            "label": votes[0] if right else wrong,
            "consistent": consistent,
            "model": "synthetic-judge",
        },
        "tags": {"safety_concern": str(rng.choice(["safe", "low", "moderate"]))},
        "meta": {"group": f"g{group:03d}", "category": CATEGORIES[group % len(CATEGORIES)]},
    }


def make_records(
    n: int, seed: int = 0, n_groups: int = 10, judge_failures: Iterable[int] = ()
) -> list[dict[str, Any]]:
    """``n`` comparison records; those at ``judge_failures`` positions have ``label: null``."""
    rng = np.random.default_rng(seed)
    records = [comparison_record(i, rng, n_groups) for i in range(n)]
    for i in judge_failures:
        records[i]["judge"] = {"label": None, "consistent": None, "model": "synthetic-judge"}
    return records


def make_comparisons(
    n: int, seed: int = 0, n_groups: int = 10, judge_failures: Iterable[int] = ()
) -> list[Comparison]:
    return [
        Comparison.model_validate(r)
        for r in make_records(n, seed, n_groups, judge_failures=judge_failures)
    ]


def write_records(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
