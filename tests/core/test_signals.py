"""Judge-reliability signals: read from orders, confidences and panels, absent when not
measured, and acting monotonically on the default router's score."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyper_ls_backend.core.comparison import Comparison, Label
from hyper_ls_backend.core.dataset import judge_views, pooled_training_set, rotate_judges
from hyper_ls_backend.core.features import Featurizer, signal_features
from hyper_ls_backend.core.router import Router
from hyper_ls_backend.core.signals import judge_signals
from hyper_ls_backend.core.strategies import SIGNAL_PRIORS, make_strategy
from hyper_ls_backend.priors import load_default_router

from .synthetic import make_comparisons


def verdict(label=None, ab=None, ba=None, confidence=None, model="j") -> dict:
    orders = {"ab": ab, "ba": ba} if (ab or ba) else None
    return {"label": label, "orders": orders, "confidence": confidence, "model": model}


def pair(judge=None, judges=(), **fields) -> Comparison:
    return Comparison.model_validate(
        {
            "id": fields.pop("id", "c1"),
            "prompt": "Which city is the capital of France?",
            "response_a": "Paris is the capital of France.",
            "response_b": "It is Lyon, I believe.",
            "judge": judge,
            "judges": list(judges),
            **fields,
        }
    )


# -- reading the signals ----------------------------------------------------------------


def test_consistency_follows_from_the_orders_when_not_given():
    assert pair(verdict("A", ab="A", ba="A")).judge.consistent is True
    assert pair(verdict("tie", ab="A", ba="B")).judge.consistent is False
    assert pair(verdict("A", ab="A-is-clearly-better", ba="A")).judge.consistent is True


def test_a_judge_that_failed_in_one_order_has_unknown_consistency():
    signals = judge_signals(pair(verdict("A", ab="A-is-slightly-better")))
    assert signals.consistent is None
    assert signals.strength == 0.5
    assert not signals.failed and not signals.doubtful


def test_stated_strength_needs_five_point_answers():
    clear = pair(verdict("A", ab="A-is-clearly-better", ba="A-is-slightly-better"))
    assert judge_signals(clear).strength == 0.75
    assert judge_signals(pair(verdict("A", ab="A", ba="A"))).strength is None


def test_a_confidence_without_a_panel():
    signals = judge_signals(pair(verdict("B", confidence=0.55)))
    assert signals.confidence == 0.55
    assert signals.panel_size == 0 and signals.panel_agreement is None
    assert signals.panel_overrules is None
    assert signal_features(signals) == {"judge=decisive": 1.0, "judge_doubt": pytest.approx(0.45)}


def test_zero_confidence_is_doubtful():
    assert judge_signals(pair(verdict("A", confidence=0.0))).doubtful


def test_a_panel_without_orders_votes_with_labels():
    judges = [verdict("A", model="p"), verdict("B", model="q"), verdict("B", model="r")]
    comparison = pair(judges=judges)
    signals = judge_signals(comparison)
    assert comparison.judge.model == "p"
    assert comparison.judge_label is Label.B  # the panel outvotes the primary
    assert signals.primary_label is Label.A
    assert signals.panel_overrules is True
    assert signals.panel_size == 2 and signals.panel_dissent == 0
    assert signals.panel_agreement == 1.0
    assert signals.consistent is None


def test_panel_votes_split_over_orders_and_a_draw_goes_to_the_primary():
    flipping = verdict("tie", ab="A", ba="B", model="p")
    steady_b = verdict("B", ab="B", ba="B", model="q")
    steady_a = verdict("A", ab="A", ba="A", model="r")
    # votes: A 0.5 + 1, B 0.5 + 1: a draw, and the primary's tie is not among the leaders
    assert pair(judges=[flipping, steady_b, steady_a]).judge_label is Label.TIE
    # the primary's own label among the leaders wins the draw
    assert pair(judges=[steady_a, steady_b]).judge_label is Label.A
    signals = judge_signals(pair(judges=[steady_a, steady_b, flipping]))
    assert signals.ai_label is Label.A
    assert signals.panel_agreement == pytest.approx(0.25)
    assert signals.panel_dissent == 2


def test_the_lean_of_a_tie():
    flipping = verdict("tie", ab="A-is-clearly-better", ba="B-is-slightly-better")
    assert judge_signals(pair(flipping)).lean is Label.A
    assert judge_signals(pair(verdict("tie", ab="A", ba="B"))).lean is None


def test_failed_only_when_no_judge_answered():
    failed_primary = [verdict(None, model="p"), verdict("B", ab="B", ba="B", model="q")]
    comparison = pair(judges=failed_primary)
    assert not comparison.judge_failed
    assert comparison.judge_label is Label.B
    assert pair(judges=[verdict(None), verdict(None)]).judge_failed
    assert judge_signals(pair(judges=[verdict(None), verdict(None)])).doubtful


def test_absent_signals_are_absent():
    assert signal_features(judge_signals(pair())) == {"judge=none": 1.0}
    bare = signal_features(judge_signals(pair(verdict("A"))))
    assert bare == {"judge=decisive": 1.0}


def test_the_panel_must_start_with_the_primary():
    with pytest.raises(ValueError, match="panel must start with the primary"):
        pair(verdict("A", model="p"), judges=[verdict("B", model="q")])


# -- judge views for fitting and evaluation ---------------------------------------------


def panel_rows() -> list[Comparison]:
    judges = [
        verdict("A", ab="A", ba="A", model="p"),
        verdict("tie", ab="A", ba="B", model="q"),
        verdict("B", ab="B", ba="B", model="r"),
    ]
    return [pair(id=f"c{i}", judges=judges, human=["A"], meta={"group": f"g{i}"}) for i in range(4)]


def test_rotating_the_panel_puts_each_judge_first():
    rotated = rotate_judges(panel_rows(), primary=1, panel=True)
    assert [v.model for v in rotated[0].judges] == ["q", "p", "r"]
    alone = rotate_judges(panel_rows(), primary=2, panel=False)
    assert alone[0].judges == [alone[0].judge] and alone[0].judge.model == "r"


def test_judge_views_and_pooled_weights():
    views = judge_views(panel_rows())
    assert list(views) == ["p+panel", "p", "q+panel", "q", "r+panel", "r"]
    single = [pair(id=f"s{i}", judge=verdict("A"), human=["B"]) for i in range(3)]
    assert list(judge_views(single)) == ["j"]
    pooled, weights = pooled_training_set([panel_rows(), single])
    assert len(pooled) == 6 * 4 + 3
    # each dataset weighs the same in total
    assert weights[:24].sum() == pytest.approx(weights[24:].sum())
    assert weights.mean() == pytest.approx(1.0)


# -- monotonicity -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_signals_router() -> Router:
    return Router(make_strategy("judge-signals")).fit(make_comparisons(160, seed=0, n_groups=12))


def score(router: Router, comparison: Comparison) -> float:
    return float(router.score([comparison])[0][0])


ROUTERS = ("shipped", "fitted")


@pytest.fixture(params=ROUTERS)
def signals_router(request, fitted_signals_router) -> Router:
    return load_default_router() if request.param == "shipped" else fitted_signals_router


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    high=st.floats(0.0, 1.0),
    low=st.floats(0.0, 1.0),
    agreeing=st.integers(0, 4),
)
def test_doubt_never_lowers_the_shipped_score(high, low, agreeing):
    router = load_default_router()
    high, low = max(high, low), min(high, low)
    unsure = score(router, pair(verdict("A", confidence=low)))
    assert unsure >= score(router, pair(verdict("A", confidence=high))) - 1e-9
    panel = [verdict("A", ab="A", ba="A", model="p")] + [verdict("A", ab="A", ba="A")] * agreeing
    dissent = pair(judges=[*panel, verdict("B", ab="B", ba="B")])
    assent = pair(judges=[*panel, verdict("A", ab="A", ba="A")])
    assert score(router, dissent) >= score(router, assent) - 1e-9


def test_an_order_flip_never_lowers_the_score(signals_router):
    steady = pair(verdict("A", ab="A", ba="A"))
    flipped = pair(verdict("A", ab="A", ba="B"))
    assert score(signals_router, flipped) >= score(signals_router, steady)
    unknown = pair(verdict("A", ab="A"))
    assert score(signals_router, steady) <= score(signals_router, unknown)
    assert score(signals_router, unknown) <= score(signals_router, flipped)


def test_signal_weights_keep_their_sign(signals_router):
    strategy = signals_router.strategy
    for name, weight in zip(strategy.feature_names_, strategy.coef_, strict=True):
        if name in SIGNAL_PRIORS:
            assert np.sign(weight) in (0, SIGNAL_PRIORS[name].sign), name


def test_content_features_are_off_in_the_default_prior():
    strategy = load_default_router().strategy
    assert strategy.name == "judge-signals" and not strategy.content
    content = [
        w
        for n, w in zip(strategy.feature_names_, strategy.coef_, strict=True)
        if n not in SIGNAL_PRIORS
    ]
    assert not any(content)


# -- the uncertainty baseline -----------------------------------------------------------


def test_uncertainty_ranks_failed_then_tie_then_flip_then_confidence_then_panel():
    rows = [
        pair(id="panel", judges=[verdict("A", model="p"), verdict("B")]),
        pair(id="plain", judge=verdict("A")),
        pair(id="unsure", judge=verdict("A", confidence=0.55)),
        pair(id="flip", judge=verdict("A", ab="A", ba="B")),
        pair(id="tie", judge=verdict("tie", ab="tie", ba="tie")),
        pair(id="failed", judge=verdict(None)),
    ]
    featurizer = Featurizer().fit(rows)
    router = Router(make_strategy("uncertainty"), featurizer=featurizer).fit(rows)
    scores, _ = router.score(rows)
    order = [rows[i].id for i in np.argsort(-scores)]
    assert order == ["failed", "tie", "flip", "unsure", "panel", "plain"]


def test_reasons_read_as_sentences():
    router = load_default_router()
    rows = [
        pair(id="flip", judge=verdict("A", ab="A", ba="B")),
        pair(id="unsure", judge=verdict("A", confidence=0.55)),
        pair(
            id="panel",
            judges=[
                verdict("A", ab="A", ba="A", model="p"),
                verdict("B", ab="B", ba="B"),
                verdict("A", ab="A", ba="A"),
            ],
        ),
    ]
    _, features = router.score(rows)
    reasons = router.explain(features, rows)
    assert reasons[0][0].startswith("the judge changed its answer when the order was swapped")
    assert any(r.startswith("low judge confidence (0.55)") for r in reasons[1])
    assert any(r.startswith("1 of 2 other judges disagree with A") for r in reasons[2]), reasons
