"""Reading and writing comparisons in the HyPER pairs format (JSON Lines).

A bad line is reported with its number and what is wrong with it; reading never yields a
half-valid row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hyper_ls_backend.core.comparison import Comparison

MAX_REPORTED_ERRORS = 20


class DatasetError(ValueError):
    """One or more lines of an input file could not be read as comparisons."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        shown = problems[:MAX_REPORTED_ERRORS]
        more = len(problems) - len(shown)
        lines = "\n".join(f"  {p}" for p in shown)
        suffix = f"\n  ... and {more} more" if more else ""
        super().__init__(f"{path}: {len(problems)} invalid line(s)\n{lines}{suffix}")


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, naming the field: ``response_a: must not be empty``."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "record"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def parse_comparison(record: Any) -> Comparison:
    """Validate one decoded record; raises ``ValueError`` with a readable message."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    try:
        return Comparison.model_validate(record)
    except ValidationError as error:
        raise ValueError(describe_validation_error(error)) from None


LABEL_FIELDS = ("human", "gold")


def iter_comparisons(
    lines: Iterable[str], source: str = "<input>", *, drop_labels: bool = False
) -> Iterator[Comparison]:
    """Yield comparisons from JSONL text, raising one ``DatasetError`` listing every bad line.

    ``drop_labels`` removes ``human`` and ``gold`` before validation, so a router's input
    is label-blind: its output cannot depend on those fields, valid or not.

    Valid rows before a bad one are still yielded, so callers that stream must not act on
    them irrevocably before the iterator is exhausted; ``read_comparisons`` collects first.
    """
    problems: list[str] = []
    seen_ids: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if drop_labels and isinstance(record, dict):
                record = {k: v for k, v in record.items() if k not in LABEL_FIELDS}
            comparison = parse_comparison(record)
        except json.JSONDecodeError as error:
            problems.append(f"line {number}: not valid JSON ({error.msg} at column {error.colno})")
            continue
        except ValueError as error:
            problems.append(f"line {number}: {error}")
            continue
        if comparison.id in seen_ids:
            problems.append(
                f"line {number}: duplicate id {comparison.id!r} "
                f"(first on line {seen_ids[comparison.id]})"
            )
            continue
        seen_ids[comparison.id] = number
        yield comparison
    if problems:
        raise DatasetError(source, problems)


def read_comparisons(path: str | Path, *, drop_labels: bool = False) -> list[Comparison]:
    """Read a whole JSONL file. ``drop_labels`` removes ``human`` and ``gold`` as it reads."""
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        return list(iter_comparisons(handle, source=str(path), drop_labels=drop_labels))


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line; returns the number written."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
