"""The tagger's dimensions and how its answers are cleaned.

The closed dimensions' values are core's (``core.features.TAG_VOCABULARY``), the ones the
router's features are built from. An LM's answer is normalised (case, spacing, common
synonyms) and validated; a value outside the vocabulary is dropped with a note rather than
stored, so the router only ever sees the values it was trained on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hyper_ls_backend.core.features import TAG_VOCABULARY

FREE_TEXT_TAGS: tuple[str, ...] = ("subject", "language")
"""The open dimensions (``core.features.OPEN_TAG_DIMENSIONS``) the tagger describes; the
third, ``category``, comes from the dataset (``meta.category``), not from an LM."""
TAG_NAMES: tuple[str, ...] = (*TAG_VOCABULARY, *FREE_TEXT_TAGS)
"""Every tag the tagger answers: core's closed dimensions, then the open ones above."""

_SYNONYMS: Mapping[str, Mapping[str, str]] = {
    "safety_concern": {"none": "safe", "no": "safe", "medium": "moderate"},
    "complexity_of_intents": {"medium": "moderate", "complicated": "complex"},
    "expertise": {
        "general": "general_public",
        "public": "general_public",
        "basic": "basic_domain",
        "expert": "expert_domain",
    },
    "open_endedness": {"none": "no", "medium": "moderate"},
    "format_constraints": {"true": "yes", "false": "no"},
    "context_material": {"true": "yes", "false": "no"},
}
_LANGUAGE_CODES: Mapping[str, str] = {
    "en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian",
    "pt": "portuguese", "nl": "dutch", "ru": "russian", "zh": "chinese", "ja": "japanese",
    "ko": "korean", "ar": "arabic", "hi": "hindi", "tr": "turkish", "pl": "polish",
}  # fmt: skip
_LANGUAGE = re.compile(r"^[a-z][a-z \-()]{1,39}$")
MAX_SUBJECT_CHARS = 60


@dataclass(frozen=True)
class CleanTags:
    tags: dict[str, str]
    notes: tuple[str, ...]


def clean_tags(answer: Mapping[str, Any]) -> CleanTags:
    """Normalise an LM's tag answer; unknown names and values are dropped with a note."""
    by_name = {_key(name): value for name, value in answer.items()}
    tags: dict[str, str] = {}
    notes: list[str] = [
        f"unknown tag {name!r} ignored" for name in by_name if name not in TAG_NAMES
    ]
    for name in TAG_NAMES:
        if by_name.get(name) is None:
            notes.append(f"{name} missing")
            continue
        value = _clean_value(name, by_name[name])
        if value is None:
            notes.append(f"{name}={by_name[name]!r} dropped ({_expected(name)})")
        else:
            tags[name] = value
    return CleanTags(tags, tuple(notes))


def _key(name: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")


def _clean_value(name: str, value: Any) -> str | None:
    if isinstance(value, bool):
        value = "yes" if value else "no"
    if not isinstance(value, str):
        return None
    text = " ".join(value.split()).lower().strip(" .;:'\"")
    if name in TAG_VOCABULARY:
        token = re.sub(r"[\s\-]+", "_", text)
        token = _SYNONYMS.get(name, {}).get(token, token)
        return token if token in TAG_VOCABULARY[name] else None
    if name == "language":
        text = _LANGUAGE_CODES.get(text, text)
        return text if _LANGUAGE.fullmatch(text) else None
    return text[:MAX_SUBJECT_CHARS].strip() or None


def _expected(name: str) -> str:
    if name in TAG_VOCABULARY:
        return "expected one of " + ", ".join(TAG_VOCABULARY[name])
    if name == "language":
        return "expected a language name"
    return "expected a short subject"
