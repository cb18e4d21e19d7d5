"""How sure the model was of its answer's side, read off its token probabilities.

The 5-point values split by label at their first character: ``A-is-...`` (A), ``B-is-...``
(B), ``Tie``. So the token that carries the value's first character is where the model
chose the label, and that token's alternatives (the server's ``top_logprobs``) show the
mass it put on each label there: an alternative spelling the same bytes up to the value,
then ``a``, ``b`` or ``t``, counts for A, B or tie. The later tokens (``clearly`` or
``slightly``) only choose a strength and do not move the label.

The value is found as the bytes of the answer's ``"preference": "..."`` field in the joined
tokens, so any tokenisation works (a quote merged with the first letter, a multi-byte
character split over tokens). Answers that are not JSON, or whose tokens do not spell the
parsed value, give None rather than a guess.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from hyper_ls_backend.core.comparison import FIVE_POINT_SCALE, Label
from hyper_ls_backend.lm.parsing import normalise_preference
from hyper_ls_backend.lm.transport import Token

_PREFERENCE_FIELD = re.compile(rb'"preference"\s*:\s*"([^"]*)"')
_LABEL_BY_FIRST_LETTER = {"a": Label.A, "b": Label.B, "t": Label.TIE}


def label_probabilities(tokens: Sequence[Token], preference: str) -> dict[Label, float] | None:
    """The probability mass on each label at the token that chose ``preference``'s label
    (labels no alternative spelled are left out), or None when that token is not found.
    ``preference`` is the parsed answer as the model gave it (not un-swapped)."""
    if not tokens:
        return None
    output = b"".join(token.text for token in tokens)
    matches = list(_PREFERENCE_FIELD.finditer(output))
    if not matches:
        return None
    match = matches[-1]  # a JSON reader keeps the last of repeated keys
    value = match.group(1).decode("utf-8", errors="replace")
    if normalise_preference(value) != preference:
        return None
    value_bytes = match.group(1)
    start = match.start(1) + len(value_bytes) - len(value_bytes.lstrip())
    end = 0
    for token in tokens:
        end += len(token.text)
        if end > start:
            mass = _mass_by_label(token, prefix=token.text[: len(token.text) - (end - start)])
            return mass if FIVE_POINT_SCALE[preference] in mass else None
    return None


def _mass_by_label(chosen: Token, prefix: bytes) -> dict[Label, float]:
    """Each label's share of the alternatives that spell ``prefix`` then the label's first
    letter (counting the chosen token once, whether or not the server listed it)."""
    candidates = {alternative.text: alternative.logprob for alternative in chosen.alternatives}
    candidates.setdefault(chosen.text, chosen.logprob)
    mass: dict[Label, float] = {}
    for text, logprob in candidates.items():
        rest = text[len(prefix) :] if text.startswith(prefix) else b""
        label = _LABEL_BY_FIRST_LETTER.get(chr(rest[0]).lower()) if rest else None
        if label is not None:
            mass[label] = min(1.0, mass.get(label, 0.0) + math.exp(logprob))
    return mass
