"""Token-probability confidence on OpenAI-compatible servers (vLLM, llama.cpp)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest

from hyper_ls_backend.core.comparison import Label
from hyper_ls_backend.lm import OpenAICompatibleTransport
from hyper_ls_backend.lm.logprobs import label_probabilities
from hyper_ls_backend.lm.openai_api import TOP_LOGPROBS
from hyper_ls_backend.lm.prompts import judge_request
from hyper_ls_backend.lm.transport import Token

from .fake_llm_server import FakeLLMServer, Recorded, Reply, openai_error, openai_logprobs
from .fake_llm_server import openai_reply as plain_reply
from .helpers import make_comparison, make_judge, make_tagger, script_orders

TransportFactory = Callable[..., OpenAICompatibleTransport]


def answer(preference: str, rationale: str = "because") -> str:
    return json.dumps({"rationale": rationale, "preference": preference}, ensure_ascii=False)


def sure_of(
    preference: str, choice: dict[str, float], *, merge_quote: bool = False, **usage: int
) -> Reply:
    """A JSON verdict with vLLM-style logprobs: ``choice`` is the mass at the label token."""
    content = answer(preference, rationale="Clearer, café-grade ☕ answer.")
    return plain_reply(
        content, logprobs=openai_logprobs(content, choice, merge_quote=merge_quote), **usage
    )


@pytest.fixture
def tokens_of(
    server: FakeLLMServer, openai_transport: TransportFactory
) -> Callable[[Reply], tuple[Token, ...]]:
    """The tokens the transport reads from a reply, through a real call."""

    def read(reply: Reply) -> tuple[Token, ...]:
        server.script(reply)
        return openai_transport().complete(judge_request(make_comparison(), swapped=False)).tokens

    return read


Tokens = Callable[[Reply], tuple[Token, ...]]


def test_confidence_is_the_mean_mass_on_the_verdicts_label(
    server: FakeLLMServer, openai_transport: TransportFactory
) -> None:
    # B is better: "B" at 0.8 when shown in order; swapped, "A" (that is, B) at 0.6.
    script_orders(
        server,
        ab=(sure_of("B-is-slightly-better", {"B": 0.8, "A": 0.15, "Tie": 0.05}),),
        ba=(sure_of("A-is-clearly-better", {"A": 0.6, "B": 0.3, "Tie": 0.1}, merge_quote=True),),
    )

    result = make_judge(openai_transport()).judge(make_comparison())

    ab, ba = result.calls
    assert ab.answer_probability == pytest.approx(0.8)
    assert ba.answer_probability == pytest.approx(0.6)
    assert ba.label_probabilities == pytest.approx({Label.B: 0.6, Label.A: 0.3, Label.TIE: 0.1})
    assert result.verdict.label is Label.B and result.verdict.consistent is True
    assert result.verdict.confidence == pytest.approx(0.7)
    body = server.requests[0].body
    assert body["logprobs"] is True and body["top_logprobs"] == TOP_LOGPROBS
    assert json.loads(result.model_dump_json())["calls"][1]["label_probabilities"]["B"] == 0.6


def test_an_order_that_disagrees_counts_against_the_label(
    server: FakeLLMServer, openai_transport: TransportFactory
) -> None:
    # A clearly in order; swapped it says "A-slightly" too, i.e. B, at 0.9 (A at 0.1).
    script_orders(
        server,
        ab=(sure_of("A-is-clearly-better", {"A": 0.55, "B": 0.4, "Tie": 0.05}),),
        ba=(sure_of("A-is-slightly-better", {"A": 0.9, "B": 0.1}),),
    )

    result = make_judge(openai_transport()).judge(make_comparison())

    # the orders disagree: the label is a tie, and its probability is the mass on tie
    assert result.verdict.label is Label.TIE and result.verdict.consistent is False
    assert result.verdict.confidence == pytest.approx((0.05 + 0.0) / 2)


def test_stated_strength_is_used_unless_both_orders_have_probabilities(
    server: FakeLLMServer, openai_transport: TransportFactory
) -> None:
    script_orders(
        server,
        ab=(sure_of("B-is-slightly-better", {"B": 0.99, "A": 0.01}),),
        ba=(plain_reply(answer("A-is-clearly-better")),),  # a server that ignores logprobs
    )

    result = make_judge(openai_transport()).judge(make_comparison())

    assert [c.answer_probability for c in result.calls] == [pytest.approx(0.99), None]
    assert result.verdict.confidence == 0.875  # combine()'s, from the stated strengths


def test_a_server_that_rejects_logprobs_is_asked_without_them_from_then_on(
    server: FakeLLMServer, openai_transport: TransportFactory
) -> None:
    def llama_without_logprobs(request: Recorded) -> Reply:
        if "logprobs" in request.body:
            return openai_error(400, "logprobs is not supported by this model")
        return plain_reply(answer("Tie"))

    server.responder = llama_without_logprobs
    judge = make_judge(openai_transport())

    first = judge.judge(make_comparison())
    asked = len(server.requests)
    second = judge.judge(make_comparison())

    assert first.verdict.label is Label.TIE and second.verdict.label is Label.TIE
    assert [c.attempts for c in first.calls] == [1, 1]  # the re-send is not a retry
    assert first.error is None and first.verdict.confidence == 0.75
    assert 3 <= asked <= 4  # both orders may have asked with logprobs before the first 400
    assert [("logprobs" in r.body) for r in server.requests[asked:]] == [False, False]


def test_other_client_errors_are_not_resent(
    server: FakeLLMServer, openai_transport: TransportFactory
) -> None:
    server.responder = lambda request: openai_error(400, "context length exceeded")

    result = make_judge(openai_transport()).judge(make_comparison())

    assert result.failed and "context length exceeded" in (result.error or "")
    assert len(server.requests) == 2


def test_logprobs_can_be_turned_off(
    server: FakeLLMServer, openai_transport: TransportFactory
) -> None:
    server.responder = lambda request: plain_reply(answer("Tie"))

    make_judge(openai_transport(logprobs=False)).judge(make_comparison())

    assert all("logprobs" not in r.body for r in server.requests)


@pytest.mark.parametrize(
    "logprobs",
    [{"content": None}, {"content": [{"token": "x"}]}, "yes", {"content": [{"bytes": "zz"}]}],
    ids=["null-content", "no-logprob", "not-an-object", "bad-bytes"],
)
def test_odd_logprobs_shapes_are_ignored(
    server: FakeLLMServer, openai_transport: TransportFactory, logprobs: object
) -> None:
    server.responder = lambda request: plain_reply(answer("Tie"), logprobs=logprobs)  # type: ignore[arg-type]

    result = make_judge(openai_transport()).judge(make_comparison())

    assert result.verdict.label is Label.TIE and result.verdict.confidence == 0.75
    assert [c.answer_probability for c in result.calls] == [None, None]


# -- reading the label's mass off the tokens ------------------------------------------------


@pytest.mark.parametrize("merge_quote", [False, True])
def test_mass_is_read_at_the_label_token_whatever_the_tokenisation(
    tokens_of: Tokens, merge_quote: bool
) -> None:
    reply = sure_of("Tie", {"Tie": 0.5, "A": 0.3, "B": 0.2}, merge_quote=merge_quote)

    mass = label_probabilities(tokens_of(reply), "Tie")

    assert mass == pytest.approx({Label.TIE: 0.5, Label.A: 0.3, Label.B: 0.2})


def test_without_alternatives_only_the_chosen_label_has_mass(tokens_of: Tokens) -> None:
    tokens = tuple(
        Token(t.text, t.logprob) for t in tokens_of(sure_of("A-is-clearly-better", {"A": 0.7}))
    )

    assert label_probabilities(tokens, "A-is-clearly-better") == pytest.approx({Label.A: 0.7})


def test_the_last_preference_field_counts_and_must_spell_the_parsed_answer() -> None:
    text = '{"preference": "B-is-clearly-better", "preference": "Tie"}'
    tokens = tuple(Token(bytes([byte]), math.log(0.9)) for byte in text.encode())

    assert label_probabilities(tokens, "Tie") == pytest.approx({Label.TIE: 0.9})
    assert label_probabilities(tokens, "B-is-clearly-better") is None


@pytest.mark.parametrize(
    "text",
    ["After careful thought: [[B]]", '{"rationale": "B is better"}', ""],
    ids=["prose", "no-preference-field", "empty"],
)
def test_an_answer_without_a_preference_field_has_no_mass(text: str) -> None:
    tokens = tuple(Token(word.encode(), -0.1) for word in text.split(" "))

    assert label_probabilities(tokens, "B-is-slightly-better") is None


def test_a_very_unlikely_alternative_adds_nothing(tokens_of: Tokens) -> None:
    choice = {"B": 0.9}
    tokens = list(tokens_of(sure_of("B-is-slightly-better", choice)))
    label_token = next(t for t in tokens if t.text == b"B")
    sentinel = Token(b"A", -9999.0)  # vLLM's "outside the top 20"
    tokens[tokens.index(label_token)] = Token(b"B", label_token.logprob, (label_token, sentinel))

    mass = label_probabilities(tokens, "B-is-slightly-better")

    assert mass == pytest.approx({Label.B: 0.9, Label.A: 0.0})


def test_the_tagger_does_not_ask_for_logprobs(
    server: FakeLLMServer, openai_transport: TransportFactory
) -> None:
    server.responder = lambda request: plain_reply(json.dumps({"subject": "teaching"}))

    make_tagger(openai_transport()).tag("Explain recursion.")

    assert "logprobs" not in server.requests[0].body
