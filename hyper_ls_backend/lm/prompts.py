"""The judge's and the tagger's instructions, and the JSON schemas of their answers.

Transport-neutral: each transport adds its own line on *how* to answer (a tool call, a
JSON object). Texts longer than ``max_chars`` are cut, and the prompt says so, so the model
judges what it sees rather than guessing at what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hyper_ls_backend.core.comparison import Comparison, Turn
from hyper_ls_backend.core.features import TAG_VOCABULARY
from hyper_ls_backend.lm.parsing import PREFERENCES
from hyper_ls_backend.lm.tags import FREE_TEXT_TAGS, TAG_NAMES
from hyper_ls_backend.lm.transport import StructuredRequest

DEFAULT_MAX_TEXT_CHARS = 20_000
"""Per text (prompt, response, earlier turn): ~5k tokens, far above a typical answer."""

JUDGE_SYSTEM = """\
You are an impartial expert judge of AI assistant responses. You are shown a conversation \
and two candidate responses, A and B, to its final user message. Decide which response is \
better overall: more helpful, more truthful and more harmless for this user, following \
their instructions. Judge substance, not style: do not favour a response for its position, \
its length, or its confidence. If both are equally good or equally bad, say Tie. When \
there is no user message, the two are texts to compare on their own: judge which is the \
better text.

Answer on this five-point scale: A-is-clearly-better, A-is-slightly-better, Tie, \
B-is-slightly-better, B-is-clearly-better. Give a rationale of one or two sentences."""

NO_PROMPT_NOTE = (
    "There is no user message: response A and response B are two texts to compare on their "
    "own merits."
)

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rationale": {
            "type": "string",
            "description": "One or two sentences: what decides the comparison.",
        },
        "preference": {"type": "string", "enum": list(PREFERENCES)},
    },
    "required": ["rationale", "preference"],
    "additionalProperties": False,
}

TAGGER_SYSTEM = """\
You describe a user's request to an AI assistant along fixed dimensions. Read only the \
request; do not answer it.

- safety_concern: how much a careless answer could cause harm (safe, low, moderate, high).
- complexity_of_intents: how many and how intertwined the user's goals are (simple, \
moderate, complex).
- expertise: the knowledge needed to answer well (general_public, basic_domain, \
expert_domain).
- open_endedness: how many different answers could be good (no, low, moderate, high).
- format_constraints: does the user constrain the answer's form, length or style (yes, no).
- context_material: does the request include material to work on, such as a text, code \
or data (yes, no).
- subject: the field of expertise, in one to three lowercase words (e.g. "law", \
"computer science", "cooking").
- language: the language of the request, as a lowercase English name (e.g. "english")."""

TAGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        **{
            name: {"type": "string", "enum": list(values)}
            for name, values in TAG_VOCABULARY.items()
        },
        **{name: {"type": "string"} for name in FREE_TEXT_TAGS},
    },
    "required": list(TAG_NAMES),
    "additionalProperties": False,
}


@dataclass
class _Truncator:
    max_chars: int
    cut: int = 0

    def __call__(self, text: str) -> str:
        if len(text) <= self.max_chars:
            return text
        self.cut += 1
        return (
            text[: self.max_chars]
            + f"\n[... truncated: showing the first {self.max_chars:,} of {len(text):,} characters]"
        )


def judge_request(
    comparison: Comparison,
    *,
    swapped: bool,
    max_chars: int = DEFAULT_MAX_TEXT_CHARS,
    max_tokens: int = 1024,
) -> StructuredRequest:
    """Ask for a verdict. ``swapped`` shows response B as "A" (and its context with it)."""
    cut = _Truncator(max_chars)
    first, second = comparison.response_a, comparison.response_b
    context_first, context_second = comparison.context_a, comparison.context_b
    if swapped:
        first, second = second, first
        context_first, context_second = context_second, context_first
    parts: list[str] = []
    if context_first == context_second:
        if context_first:
            parts.append(_conversation("conversation", context_first, cut))
    else:
        parts.append(_conversation("conversation_seen_by_a", context_first, cut))
        parts.append(_conversation("conversation_seen_by_b", context_second, cut))
    if comparison.prompt.strip():
        parts.append(f"<final_user_message>\n{cut(comparison.prompt)}\n</final_user_message>")
    else:
        parts.append(NO_PROMPT_NOTE)
    parts.append(f"<response_a>\n{cut(first)}\n</response_a>")
    parts.append(f"<response_b>\n{cut(second)}\n</response_b>")
    if cut.cut:
        parts.append(
            f"Note: {cut.cut} text(s) above were truncated to {max_chars:,} characters; "
            "judge on what is shown and do not penalise a response for the cut."
        )
    parts.append("Which response is better?")
    return StructuredRequest(
        system=JUDGE_SYSTEM,
        user="\n\n".join(parts),
        schema_name="record_verdict",
        schema_description="Record which response is better, on the five-point scale.",
        schema=VERDICT_SCHEMA,
        max_tokens=max_tokens,
        token_probabilities=True,
    )


def tagger_request(
    prompt: str, *, max_chars: int = DEFAULT_MAX_TEXT_CHARS, max_tokens: int = 512
) -> StructuredRequest:
    cut = _Truncator(max_chars)
    user = f"<request>\n{cut(prompt)}\n</request>"
    if cut.cut:
        user += f"\n\nNote: the request was truncated to {max_chars:,} characters."
    return StructuredRequest(
        system=TAGGER_SYSTEM,
        user=user + "\n\nDescribe this request.",
        schema_name="record_tags",
        schema_description="Record the request's description along every dimension.",
        schema=TAGS_SCHEMA,
        max_tokens=max_tokens,
    )


def _conversation(tag: str, turns: list[Turn], cut: _Truncator) -> str:
    body = "\n\n".join(f"[{turn.role}]\n{cut(turn.content)}" for turn in turns)
    body = body or "(no earlier turns)"
    return f"<{tag}>\n{body}\n</{tag}>"
