"""Per-comparison features, binned and one-hot as in HyPER, so a mix can be a count vector.

The judge-reliability block (``signals.py``) comes on top: whether the judges' label is
decisive, a tie or failed, order consistency, stated strength, and two continuous columns
(``CONTINUOUS_SIGNALS``), present only where the comparison's judges measured them.

The feature set is declarative: every column has a readable name (``len_diff::0.67-1.00``,
``safety_concern=moderate``, ``judge_consistent=no``) and ``Featurizer.feature_names_``
lists them in column order. Lengths are percentile-ranked against a reference distribution
learned by ``fit`` and saved with the model, so one new comparison gets the value it would
get in a batch.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from typing import Any

import numpy as np

from hyper_ls_backend.core.comparison import Comparison, Label
from hyper_ls_backend.core.signals import JudgeSignals, judge_signals
from hyper_ls_backend.core.text import PairMeasures, measure_pair

PERCENTILE_MEASURES = ("prompt_len", "shorter_len", "longer_len", "len_diff")
"""Measures with no natural scale: ranked within the reference distribution."""
UNIT_MEASURES = ("len_gap", "rouge_1", "rouge_l", "cosine", "entity_overlap", "number_overlap")
"""Measures already in [0, 1]: binned on their raw value."""
FLAGS = (
    "multi_turn",
    "prompt_has_code",
    "responses_have_code",
    "responses_have_lists",
    "final_numbers_match",
)

TAG_VOCABULARY: dict[str, tuple[str, ...]] = {
    "safety_concern": ("safe", "low", "moderate", "high"),
    "complexity_of_intents": ("simple", "moderate", "complex"),
    "expertise": ("general_public", "basic_domain", "expert_domain"),
    "open_endedness": ("no", "low", "moderate", "high"),
    "format_constraints": ("yes", "no"),
    "context_material": ("yes", "no"),
}
"""The paper's closed tag dimensions. Open ones (subject, language, category) take the
values seen at least ``min_tag_count`` times in the fitting data; the rest become ``other``."""
OPEN_TAG_DIMENSIONS = ("subject", "language", "category")

JUDGE_VERDICTS = ("decisive", "tie", "failed", "none")
"""Whether the judges' label picks a side, not which: "A" vs "B" says more about how a
dataset ordered its responses than about the judge (``judge_pick`` keeps the length
relation)."""
JUDGE_CONSISTENCY = ("yes", "no")
"""Whether the primary kept its answer with the order swapped; neither when not run both
ways (an absent signal is absent, not "consistent")."""
JUDGE_PICKS = ("longer", "shorter", "same_length", "tie")
"""Whether the judges' label sides with the longer response: a known LM-judge bias."""
CONTINUOUS_SIGNALS = ("judge_doubt", "panel_disagreement")
"""The two columns that are not 0/1: ``1 - confidence`` of the primary, and the share of
the other judges' votes against the pre-filled label; both 0 when not measured."""

QUANTILE_POINTS = 101


def bin_labels(n_bins: int) -> list[str]:
    edges = np.linspace(0, 1, n_bins + 1)
    return [f"{lo:.2f}-{hi:.2f}" for lo, hi in itertools.pairwise(edges)]


def percentile_rank(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Mid-rank of each value among the reference quantiles, in [0, 1]."""
    left = np.searchsorted(quantiles, values, side="left")
    right = np.searchsorted(quantiles, values, side="right")
    return (left + right) / (2 * len(quantiles))


def judge_pick(comparison: Comparison, measures: PairMeasures) -> str | None:
    label = comparison.judge_label
    if label is None:
        return None
    if label is Label.TIE:
        return "tie"
    if measures.longer_side == "same":
        return "same_length"
    return "longer" if label.value == measures.longer_side else "shorter"


def signal_features(signals: JudgeSignals) -> dict[str, float]:
    """The judge-reliability block of a comparison's features: column name -> value."""
    if not signals.judged:
        return {"judge=none": 1.0}
    if signals.failed:
        return {"judge=failed": 1.0}
    values = {"judge=tie" if signals.tie else "judge=decisive": 1.0}
    if signals.consistent is not None:
        values[f"judge_consistent={'yes' if signals.consistent else 'no'}"] = 1.0
    if signals.strength is not None and signals.strength < 1.0:
        values["judge_strength<1"] = 1.0  # not "clearly" in both orders
        if signals.strength <= 0.5:
            values["judge_strength<=0.5"] = 1.0  # "slightly" or tie at best
    if signals.confidence is not None:
        values["judge_doubt"] = 1.0 - signals.confidence
    if signals.panel_agreement is not None:
        values["panel_disagreement"] = 1.0 - signals.panel_agreement
        if signals.panel_overrules:
            values["panel_overrules=yes"] = 1.0
    return values


class Featurizer:
    """Turns comparisons into a 0/1 matrix of named, binned features (scikit-learn style).

    Parameters
    ----------
    n_bins:
        Bins per continuous measure (the paper uses 3).
    min_tag_count:
        How often an open tag value must appear in the fitting data to get its own column.
    """

    def __init__(self, n_bins: int = 3, min_tag_count: int = 5) -> None:
        self.n_bins = n_bins
        self.min_tag_count = min_tag_count

    def get_params(self) -> dict[str, Any]:
        return {"n_bins": self.n_bins, "min_tag_count": self.min_tag_count}

    # -- learning -------------------------------------------------------------------------

    def fit(self, comparisons: Sequence[Comparison]) -> Featurizer:
        if not comparisons:
            raise ValueError("cannot fit a featurizer on zero comparisons")
        measures = list(iter_measures(comparisons))
        grid = np.linspace(0, 1, QUANTILE_POINTS)
        self.quantiles_ = {
            name: np.quantile([getattr(m, name) for m in measures], grid).tolist()
            for name in PERCENTILE_MEASURES
        }
        counts: dict[str, Counter[str]] = {d: Counter() for d in OPEN_TAG_DIMENSIONS}
        for comparison in comparisons:
            for dimension, value in comparison.all_tags.items():
                if dimension in counts:
                    counts[dimension][value] += 1
        self.vocabulary_ = {
            **{d: list(v) for d, v in TAG_VOCABULARY.items()},
            **{
                d: [*sorted(v for v, n in counts[d].items() if n >= self.min_tag_count), "other"]
                for d in OPEN_TAG_DIMENSIONS
            },
        }
        self._index()
        return self

    def _index(self) -> None:
        bins = bin_labels(self.n_bins)
        names = [f"{m}::{b}" for m in (*PERCENTILE_MEASURES, *UNIT_MEASURES) for b in bins]
        names += [f"{flag}=yes" for flag in FLAGS]
        names += [f"{d}={v}" for d, values in self.vocabulary_.items() for v in values]
        names += [f"judge={v}" for v in JUDGE_VERDICTS]
        names += [f"judge_consistent={v}" for v in JUDGE_CONSISTENCY]
        names += [f"judge_pick={v}" for v in JUDGE_PICKS]
        names += ["judge_strength<1", "judge_strength<=0.5", *CONTINUOUS_SIGNALS]
        names += ["panel_overrules=yes"]
        self.feature_names_ = names
        self._column = {name: i for i, name in enumerate(names)}
        self._quantile_arrays = {k: np.asarray(v) for k, v in self.quantiles_.items()}

    # -- answering ------------------------------------------------------------------------

    def transform(
        self,
        comparisons: Sequence[Comparison],
        n_jobs: int = 1,
        progress: Callable[[int], None] | None = None,
        signals: Sequence[JudgeSignals] | None = None,
    ) -> np.ndarray:
        """A float32 0/1 matrix, one row per comparison, columns in ``feature_names_``.

        ``n_jobs > 1`` measures texts in that many worker processes (worth it from a few
        thousand comparisons on; the pool is kept for later calls) while this process fills
        in the rows already measured. ``progress`` is called with the number of comparisons
        done, every ``PARALLEL_CHUNK``. ``signals``: the comparisons' ``judge_signals``,
        when the caller has them already (derived here otherwise).
        """
        matrix = np.zeros((len(comparisons), len(self.feature_names_)), dtype=np.float32)
        measures = []
        for row, m in enumerate(iter_measures(comparisons, n_jobs)):
            measures.append(m)
            judged = signals[row] if signals is not None else None
            for name, value in self._categorical_values(comparisons[row], m, judged).items():
                column = self._column.get(name)
                if column is not None:
                    matrix[row, column] = value
            if progress and (row + 1) % PARALLEL_CHUNK == 0:
                progress(PARALLEL_CHUNK)
        if progress and len(comparisons) % PARALLEL_CHUNK:
            progress(len(comparisons) % PARALLEL_CHUNK)
        self._fill_binned(matrix, measures)
        return matrix

    def _fill_binned(self, matrix: np.ndarray, measures: list[PairMeasures]) -> None:
        if not measures:
            return
        rows = np.arange(len(measures))
        for offset, name in enumerate((*PERCENTILE_MEASURES, *UNIT_MEASURES)):
            values = np.array([getattr(m, name) for m in measures], dtype=float)
            if name in self._quantile_arrays:
                values = percentile_rank(values, self._quantile_arrays[name])
            bins = np.minimum((np.clip(values, 0, 1) * self.n_bins).astype(int), self.n_bins - 1)
            matrix[rows, offset * self.n_bins + bins] = 1.0

    def _categorical_values(
        self, comparison: Comparison, measures: PairMeasures, signals: JudgeSignals | None = None
    ) -> dict[str, float]:
        if signals is None:
            signals = judge_signals(comparison)
        flags = {
            "multi_turn": bool(comparison.context_a or comparison.context_b),
            "prompt_has_code": measures.prompt_has_code,
            "responses_have_code": measures.responses_have_code,
            "responses_have_lists": measures.responses_have_lists,
            "final_numbers_match": measures.final_numbers_match,
        }
        names = [f"{flag}=yes" for flag, on in flags.items() if on]
        for dimension, value in comparison.all_tags.items():
            known = self.vocabulary_.get(dimension)
            if known is not None:
                names.append(f"{dimension}={value if value in known else 'other'}")
        pick = judge_pick(comparison, measures)
        if pick is not None:
            names.append(f"judge_pick={pick}")
        return dict.fromkeys(names, 1.0) | signal_features(signals)

    # -- persistence ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.get_params(),
            "quantiles": self.quantiles_,
            "vocabulary": self.vocabulary_,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Featurizer:
        featurizer = cls(**data["params"])
        featurizer.quantiles_ = {k: list(v) for k, v in data["quantiles"].items()}
        featurizer.vocabulary_ = {k: list(v) for k, v in data["vocabulary"].items()}
        featurizer._index()
        return featurizer


def measure(comparison: Comparison) -> PairMeasures:
    return measure_pair(comparison.prompt, comparison.response_a, comparison.response_b)


PARALLEL_CHUNK = 256


@cache
def _worker_pool(n_jobs: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(n_jobs)


def iter_measures(comparisons: Sequence[Comparison], n_jobs: int = 1) -> Iterator[PairMeasures]:
    """Measures in input order; with ``n_jobs > 1`` computed ahead in worker processes."""
    if n_jobs <= 1 or len(comparisons) < 2 * PARALLEL_CHUNK:
        return map(measure, comparisons)
    # Ship plain strings, not models: pickling is most of the cost of going parallel.
    texts = [(c.prompt, c.response_a, c.response_b) for c in comparisons]
    return _worker_pool(n_jobs).map(_measure_texts, texts, chunksize=PARALLEL_CHUNK)


def _measure_texts(texts: tuple[str, str, str]) -> PairMeasures:
    return measure_pair(*texts)
