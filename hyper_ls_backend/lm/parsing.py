"""Reading an LM's answer: structured first, then JSON in text, then a label in prose.

Models asked for a tool call or JSON mostly comply; the fallbacks catch the rest (a fenced
code block, a JSON object inside an explanation, "B-is-slightly-better" or MT-Bench's
"[[A]]" in plain text, an answer that is just "Tie"). An ambiguous answer (naming two
different preferences) is not guessed at.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from hyper_ls_backend.core.comparison import FIVE_POINT_SCALE
from hyper_ls_backend.lm.transport import Completion

PREFERENCES: tuple[str, ...] = tuple(FIVE_POINT_SCALE)
"""The 5-point MultiPref scale, A-is-clearly-better first."""

_BY_TOKEN = {re.sub(r"[^a-z]", "", p.lower()): p for p in PREFERENCES}
_BARE = {"a": "A-is-slightly-better", "b": "B-is-slightly-better", "tie": "Tie", "c": "Tie"}
"""A bare coarse answer has no stated strength: read as 'slightly', the weaker claim."""

_IN_PROSE = re.compile(
    r"\b([ab])[\s_\-]*is[\s_\-]*(clearly|slightly)[\s_\-]*better\b|\[\[\s*(a|b|c|tie)\s*\]\]",
    re.IGNORECASE,
)


class UnparseableAnswer(ValueError):
    """The model answered, but not with anything we can read."""


@dataclass(frozen=True)
class ParsedVerdict:
    preference: str
    """One of ``PREFERENCES``, in the orientation the responses were shown."""
    rationale: str | None


def answer_object(completion: Completion) -> dict[str, Any] | None:
    """The structured answer if the API gave one, else the first JSON object in the text."""
    if completion.data is not None:
        return completion.data
    return extract_json_object(completion.text)


def extract_json_object(text: str) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def normalise_preference(value: Any) -> str | None:
    """A 5-point answer in any common spelling (case, spaces, underscores), or a bare
    A / B / tie; None for anything else."""
    if not isinstance(value, str):
        return None
    token = re.sub(r"[^a-z]", "", value.lower())
    return _BY_TOKEN.get(token) or _BARE.get(token)


def parse_verdict(completion: Completion) -> ParsedVerdict:
    obj = answer_object(completion)
    if obj is not None:
        preference = normalise_preference(obj.get("preference"))
        if preference is not None:
            rationale = obj.get("rationale")
            return ParsedVerdict(preference, rationale if isinstance(rationale, str) else None)
    preference = preference_in_prose(completion.text)
    if preference is None:
        raise UnparseableAnswer(
            f"no preference in the answer (stop reason {completion.stop_reason}): "
            + _excerpt(completion.raw)
        )
    return ParsedVerdict(preference, None)


def preference_in_prose(text: str) -> str | None:
    """The single preference named in free text; None if none or several differ."""
    whole = normalise_preference(text.strip())
    if whole is not None:
        return whole
    found = set()
    for match in _IN_PROSE.finditer(text):
        if match.group(1):
            found.add(f"{match.group(1).upper()}-is-{match.group(2).lower()}-better")
        else:
            found.add(_BARE[match.group(3).lower()])
    return found.pop() if len(found) == 1 else None


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "...")
