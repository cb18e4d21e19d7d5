"""The featurizer: bins, readable names, percentile ranks and persistence."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.features import (
    FLAGS,
    JUDGE_CONSISTENCY,
    JUDGE_PICKS,
    PERCENTILE_MEASURES,
    UNIT_MEASURES,
    Featurizer,
    bin_labels,
)

N_MEASURES = len(PERCENTILE_MEASURES) + len(UNIT_MEASURES)


def make(
    i: int = 0, a_words: int = 10, b_words: int = 4, judge: Any = None, **fields: Any
) -> Comparison:
    record = {
        "id": f"x{i}",
        "prompt": "Tell me something useful about the sea.",
        "response_a": " ".join(f"alpha{j}" for j in range(a_words)),
        "response_b": " ".join(f"beta{j}" for j in range(b_words)),
        "judge": judge,
        **fields,
    }
    return Comparison.model_validate(record)


def active(featurizer: Featurizer, comparison: Comparison) -> set[str]:
    row = featurizer.transform([comparison])[0]
    return {featurizer.feature_names_[i] for i in np.flatnonzero(row)}


def reloaded(featurizer: Featurizer) -> Featurizer:
    return Featurizer.from_dict(json.loads(json.dumps(featurizer.to_dict())))


def test_bin_labels_split_the_unit_interval():
    assert bin_labels(3) == ["0.00-0.33", "0.33-0.67", "0.67-1.00"]
    assert bin_labels(2) == ["0.00-0.50", "0.50-1.00"]


def test_feature_names_are_readable_and_complete(featurizer):
    names = featurizer.feature_names_
    assert len(names) == len(set(names))
    for expected in (
        "len_diff::0.67-1.00",
        "prompt_len::0.00-0.33",
        "rouge_l::0.33-0.67",
        "entity_overlap::0.67-1.00",
        "multi_turn=yes",
        "responses_have_code=yes",
        "safety_concern=moderate",
        "category=writing",
        "category=other",
        "judge=failed",
        "judge_consistent=no",
        "judge_pick=longer",
        "judge_pick=same_length",
    ):
        assert expected in names
    assert sum(n.startswith("judge_consistent=") for n in names) == len(JUDGE_CONSISTENCY)
    assert sum(n.startswith("judge_pick=") for n in names) == len(JUDGE_PICKS)
    assert sum(n.endswith("=yes") and n.split("=")[0] in FLAGS for n in names) == len(FLAGS)


@pytest.mark.parametrize("n_bins", [2, 3, 5])
def test_every_row_has_exactly_one_bin_per_measure(comparisons, n_bins):
    featurizer = Featurizer(n_bins=n_bins).fit(comparisons)
    matrix = featurizer.transform(comparisons)
    assert matrix.dtype == np.float32
    assert set(np.unique(matrix)) <= {0.0, 1.0}
    binned = matrix[:, : N_MEASURES * n_bins].reshape(len(comparisons), N_MEASURES, n_bins)
    assert (binned.sum(axis=2) == 1).all()


def test_every_row_has_one_judge_feature_and_a_consistency_feature_only_when_known(
    featurizer, comparisons, fresh
):
    rows = [*comparisons, *fresh]
    names = np.array(featurizer.feature_names_)
    matrix = featurizer.transform(rows)
    judge = np.char.startswith(names, "judge=")
    consistency = np.char.startswith(names, "judge_consistent=")
    assert (matrix[:, judge].sum(axis=1) == 1).all()
    known = np.array([c.judge is not None and c.judge.consistent is not None for c in rows])
    failed = np.array([c.judge_failed for c in rows])
    assert (matrix[:, consistency].sum(axis=1) == (known & ~failed)).all()


def test_identical_responses_fall_in_the_top_similarity_bins(featurizer):
    same = make(a_words=0, b_words=0, response_a="Paris is nice", response_b="Paris is nice")
    features = active(featurizer, same)
    for measure in ("rouge_1", "rouge_l", "cosine", "entity_overlap"):
        assert f"{measure}::0.67-1.00" in features
    assert "len_gap::0.00-0.33" in features
    assert "len_diff::0.00-0.33" in features


def test_lengths_are_ranked_against_the_fitting_data():
    fitted = [make(i, a_words=n, b_words=1) for i, n in enumerate(range(1, 31))]
    featurizer = Featurizer().fit(fitted)
    assert "longer_len::0.00-0.33" in active(featurizer, make(a_words=2, b_words=1))
    assert "longer_len::0.33-0.67" in active(featurizer, make(a_words=15, b_words=1))
    assert "longer_len::0.67-1.00" in active(featurizer, make(a_words=29, b_words=1))
    # far outside the reference distribution: clipped into the end bins
    assert "longer_len::0.67-1.00" in active(featurizer, make(a_words=500, b_words=1))
    assert "len_diff::0.00-0.33" in active(featurizer, make(a_words=1, b_words=1))


JUDGE_CASES = [
    # judge verdict, words in A, words in B, features expected, feature families absent
    ({"label": "A", "consistent": False}, 10, 4, {"judge_consistent=no", "judge_pick=longer"}, ()),
    ({"label": "B", "consistent": True}, 10, 4, {"judge_consistent=yes", "judge_pick=shorter"}, ()),
    ({"label": "B"}, 4, 10, {"judge_pick=longer"}, ("judge_consistent",)),
    ({"label": "tie", "consistent": True}, 10, 4, {"judge=tie", "judge_pick=tie"}, ()),
    ({"label": "A"}, 10, 10, {"judge_pick=same_length"}, ()),
    ({"label": None}, 10, 4, {"judge=failed"}, ("judge_pick", "judge_consistent")),
    (None, 10, 4, {"judge=none"}, ("judge_pick", "judge_consistent", "panel_", "judge_doubt")),
]


@pytest.mark.parametrize(("judge", "a_words", "b_words", "expected", "absent"), JUDGE_CASES)
def test_judge_features(featurizer, judge, a_words, b_words, expected, absent):
    features = active(featurizer, make(a_words=a_words, b_words=b_words, judge=judge))
    assert expected <= features
    assert sum(f.startswith("judge=") for f in features) == 1
    for prefix in absent:
        assert not any(f.startswith(prefix) for f in features)


def test_flags_multi_turn_code_and_lists(featurizer):
    shown = ("multi_turn=yes", "prompt_has_code=yes", "responses_have_code=yes")
    shown += ("responses_have_lists=yes",)
    plain = active(featurizer, make())
    assert not plain & set(shown)
    rich = make(
        prompt="Why does def f(): fail?",
        response_a="- first\n- second",
        response_b="```\ncode\n```",
        context_a=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    )
    assert set(shown) <= active(featurizer, rich)


def test_open_tags_keep_frequent_values_and_map_the_rest_to_other():
    fitted = [make(i, meta={"category": "writing"}) for i in range(5)]
    fitted += [make(10 + i, meta={"category": "math"}) for i in range(4)]
    featurizer = Featurizer(min_tag_count=5).fit(fitted)
    assert "category=writing" in featurizer.feature_names_
    assert "category=math" not in featurizer.feature_names_  # seen 4 < 5 times
    assert "category=writing" in active(featurizer, make(meta={"category": "Writing"}))
    assert "category=other" in active(featurizer, make(meta={"category": "math"}))
    assert "category=other" in active(featurizer, make(meta={"category": "never-seen"}))
    assert "subject=other" in active(featurizer, make(tags={"subject": "astrology"}))


def test_tags_without_a_value_or_dimension_add_no_feature(featurizer):
    untagged = active(featurizer, make())
    assert not any(f.startswith(("category=", "subject=", "safety_concern=")) for f in untagged)
    # an unknown dimension is ignored rather than invented
    assert active(featurizer, make(tags={"mood": "happy"})) == untagged


def test_closed_tag_values_are_always_columns(featurizer):
    assert "safety_concern=high" in featurizer.feature_names_  # never seen in fitting data
    assert "safety_concern=high" in active(featurizer, make(tags={"safety_concern": "HIGH"}))


def test_one_comparison_alone_gets_the_row_it_gets_in_a_batch(featurizer, fresh):
    batch = featurizer.transform(fresh)
    for i, comparison in enumerate(fresh):
        np.testing.assert_array_equal(featurizer.transform([comparison])[0], batch[i])


def test_transform_of_nothing_is_an_empty_matrix(featurizer):
    assert featurizer.transform([]).shape == (0, len(featurizer.feature_names_))


def test_fit_on_nothing_is_an_error():
    with pytest.raises(ValueError, match="zero comparisons"):
        Featurizer().fit([])


def test_round_trip_through_json_gives_identical_transforms(featurizer, comparisons, fresh):
    again = reloaded(featurizer)
    assert again.feature_names_ == featurizer.feature_names_
    assert again.get_params() == featurizer.get_params()
    both = [*comparisons, *fresh]
    np.testing.assert_array_equal(again.transform(both), featurizer.transform(both))


def test_round_trip_keeps_bins_at_quantile_edges():
    # longer_len values 1, 1, 3, 3, 23, 23: the 0.67 quantile is 10 plus float noise
    fitted = [make(i, a_words=n, b_words=1) for i, n in enumerate([1, 1, 3, 3, 23, 23])]
    featurizer = Featurizer().fit(fitted)
    probe = [make(99, a_words=10, b_words=1)]
    np.testing.assert_array_equal(
        reloaded(featurizer).transform(probe), featurizer.transform(probe)
    )


@pytest.mark.data
def test_real_data_single_rows_and_round_trip_match_the_batch(mtbench):
    featurizer = Featurizer().fit(mtbench)
    batch = featurizer.transform(mtbench)
    np.testing.assert_array_equal(reloaded(featurizer).transform(mtbench), batch)
    for i in range(0, len(mtbench), 41):
        np.testing.assert_array_equal(featurizer.transform([mtbench[i]])[0], batch[i])
    # real categories are frequent enough to get their own columns
    assert "category=writing" in featurizer.feature_names_


def test_the_judge_signals_given_give_the_rows_derived_without_them(featurizer, fresh):
    from hyper_ls_backend.core.signals import UNJUDGED, judge_signals

    signals = [judge_signals(c) for c in fresh]
    assert np.array_equal(featurizer.transform(fresh, signals=signals), featurizer.transform(fresh))
    unjudged = [c.with_judge(None) for c in fresh[:3]]
    assert all(judge_signals(c) is UNJUDGED for c in unjudged)
