"""Reading and writing comparisons in the HyPER pairs format (JSON Lines), and the views
of a dataset's judge panel a router is fitted on.

A bad line is reported with its number and what is wrong with it; reading never yields a
half-valid row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from hyper_ls_backend.core.comparison import Comparison

MAX_REPORTED_ERRORS = 20


class DatasetError(ValueError):
    """One or more lines of an input file could not be read as comparisons."""

    def __init__(self, path: str, problems: list[str], total: int | None = None) -> None:
        """``total`` counts every problem when ``problems`` holds only the first ones."""
        self.path = path
        self.problems = problems
        self.total = len(problems) if total is None else total
        shown = problems[:MAX_REPORTED_ERRORS]
        more = self.total - len(shown)
        lines = "\n".join(f"  {p}" for p in shown)
        suffix = f"\n  ... and {more} more" if more else ""
        super().__init__(f"{path}: {self.total} invalid line(s)\n{lines}{suffix}")


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


def parse_line(line: str, number: int, *, drop_labels: bool = False) -> Comparison:
    """Line ``number`` of a JSONL file as a comparison; a ``ValueError`` says what is wrong
    with it, starting ``line N:``. ``drop_labels`` as in ``iter_comparisons``."""
    try:
        record = json.loads(line)
        if drop_labels and isinstance(record, dict) and not record.keys().isdisjoint(LABEL_FIELDS):
            record = {k: v for k, v in record.items() if k not in LABEL_FIELDS}
        return parse_comparison(record)
    except json.JSONDecodeError as error:
        message = f"not valid JSON ({error.msg} at column {error.colno})"
        raise ValueError(f"line {number}: {message}") from None
    except ValueError as error:
        raise ValueError(f"line {number}: {error}") from None


def duplicate_id(number: int, id_: str, first: int) -> str:
    """The problem with line ``number``, whose id line ``first`` already has."""
    return f"line {number}: duplicate id {id_!r} (first on line {first})"


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
            comparison = parse_line(line, number, drop_labels=drop_labels)
        except ValueError as error:
            problems.append(str(error))
            continue
        if comparison.id in seen_ids:
            problems.append(duplicate_id(number, comparison.id, seen_ids[comparison.id]))
            continue
        seen_ids[comparison.id] = number
        yield comparison
    if problems:
        raise DatasetError(source, problems)


def read_comparisons(path: str | Path, *, drop_labels: bool = False) -> list[Comparison]:
    """Read a whole JSONL file. ``drop_labels`` removes ``human`` and ``gold`` as it reads."""
    path = Path(path)
    # utf-8-sig: files saved by spreadsheet tools and editors often start with a BOM.
    with path.open(encoding="utf-8-sig") as handle:
        return list(iter_comparisons(handle, source=str(path), drop_labels=drop_labels))


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line; returns the number written."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def rotate_judges(comparisons: Sequence[Comparison], primary: int, panel: bool) -> list[Comparison]:
    """The comparisons as if judge number ``primary`` of each panel led, with the other
    judges as its panel (``panel=True``) or alone. Comparisons without a panel keep their
    judge when ``primary`` is 0 and are left out otherwise."""
    rotated = []
    for comparison in comparisons:
        verdicts = comparison.judges or ([comparison.judge] if comparison.judge else [])
        if primary >= len(verdicts):
            continue
        lead = verdicts[primary]
        others = [v for i, v in enumerate(verdicts) if i != primary]
        rotated.append(comparison.with_panel([lead, *others] if panel else [lead]))
    return rotated


def judge_views(comparisons: Sequence[Comparison]) -> dict[str, list[Comparison]]:
    """Every way to read a dataset's judges: each judge as the primary, with the others as
    its panel and alone. Named ``MODEL+panel`` and ``MODEL``; one view without a panel."""
    size = max((len(c.judges) for c in comparisons), default=0)
    views: dict[str, list[Comparison]] = {}
    for primary in range(max(size, 1)):
        for panel in (True, False) if size > 1 else (False,):
            rotated = rotate_judges(comparisons, primary, panel)
            if not rotated:
                continue
            model = rotated[0].judge.model if rotated[0].judge else None
            views[f"{model or f'judge {primary}'}{'+panel' if panel else ''}"] = rotated
    return views


def pooled_training_set(
    datasets: Sequence[Sequence[Comparison]],
) -> tuple[list[Comparison], np.ndarray]:
    """Every judge view of every dataset, pooled, with weights that give each dataset the
    same total weight and each of its views an equal share: a router fitted on it learns
    what the judges' signals mean whichever judge leads and whatever the panel."""
    pooled, weights = [], []
    for dataset in datasets:
        views = list(judge_views(dataset).values())
        for view in views:
            pooled.extend(view)
            weights.extend([1.0 / (len(views) * len(view))] * len(view))
    weights_array = np.asarray(weights)
    return pooled, weights_array * len(weights_array) / weights_array.sum()
