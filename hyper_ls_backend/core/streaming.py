"""``hyper-ls route`` in bounded memory: the ranked batch of a whole file, streamed twice.

``Router.route`` holds every comparison (about 2.6 KB of text each, as validated objects)
and the feature matrix. ``route_file`` reads the file in chunks of ``CHUNK_ROWS`` lines and
keeps only ``BatchFacts`` per comparison (its score, three flags, its id and line number):
about 35 bytes plus the id's length. Pass 1 parses, validates, featurizes and scores each
chunk, and spools what the reasons need (judge signals, feature rows) to a temporary file;
the campaign policy then plans the batch on the facts (``CampaignPolicy.plan_ranked``: the
same code that decides ``Router.route``, a server's import and the offline replay); pass 2
reads the spool back, explains each row and writes its decision, in input order. Both
passes run in ``n_jobs`` worker processes, fed a few chunks ahead, while this process only
reads lines, keeps the facts and writes: reading overlaps measuring.

The output is byte for byte ``Router.route``'s. Two things do grow with the input besides
the facts: the spool (on disk, next to the output, about as large as it) and, for the
``hyper`` strategy, every feature row (its selection mixes the whole batch).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import pickle
import struct
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TypeVar

import numpy as np

from hyper_ls_backend.core.comparison import Comparison, Label
from hyper_ls_backend.core.dataset import (
    MAX_REPORTED_ERRORS,
    DatasetError,
    duplicate_id,
    parse_line,
)
from hyper_ls_backend.core.policy import (
    BatchFacts,
    CampaignPolicy,
    LedgerState,
    Outcome,
    RankedPlan,
    Scored,
    budget_count,
)
from hyper_ls_backend.core.router import Router
from hyper_ls_backend.core.signals import JudgeSignals, judge_signals

CHUNK_ROWS = 2_000
"""Lines per chunk: a few MB of text in flight per worker."""
AHEAD = 2
"""Chunks queued per worker, so none waits for this process."""
RECORD_SIZE = struct.Struct("<Q")

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ChunkFacts:
    """What pass 1 keeps of one chunk; ``spool`` (pickled signals and feature rows) goes to
    disk for pass 2."""

    lines: np.ndarray
    """Line number of each comparison (blank and bad lines have none)."""
    ids: bytes
    """The ids, UTF-8, one after the other."""
    id_sizes: np.ndarray
    id_hashes: np.ndarray
    scores: np.ndarray
    forced: np.ndarray
    doubtful: np.ndarray
    unfillable_tie: np.ndarray
    feature_sum: np.ndarray
    problems: list[tuple[int, str]]
    spool: bytes


@dataclass(frozen=True)
class RouteSummary:
    """What ``route_file`` decided, in counts."""

    n: int
    n_human: int
    n_certified: int
    """Sent to the judge under the certificate's guarantee."""
    budget: int
    """How many comparisons the budget allows."""
    forced_human: int
    """Comparisons that had to go to humans (judge failed)."""

    @property
    def n_ai(self) -> int:
        return self.n - self.n_human

    @property
    def over_budget(self) -> bool:
        return self.n_human > self.budget


@dataclass(frozen=True)
class _Pass1:
    router: Router
    policy: CampaignPolicy


@dataclass(frozen=True)
class _Pass2:
    router: Router
    policy: CampaignPolicy
    plan: RankedPlan
    """The batch's plan without its outcomes (each chunk brings its own)."""


_state: _Pass1 | _Pass2 | None = None
"""What a worker process (or this one, with ``n_jobs=1``) routes with."""


def _set_state(state: _Pass1 | _Pass2 | None) -> None:
    global _state
    _state = state


class _Facts:
    """Every chunk's facts, appended as pass 1 returns them."""

    def __init__(self) -> None:
        self.ids = bytearray()
        self.parts: list[ChunkFacts] = []
        self.problems: list[tuple[int, str]] = []
        self.n_problems = 0
        self.feature_sum: np.ndarray | None = None

    def add(self, chunk: ChunkFacts) -> None:
        self.ids += chunk.ids
        self.parts.append(replace(chunk, ids=b"", spool=b"", problems=[]))
        self.n_problems += len(chunk.problems)
        self.problems = sorted([*self.problems, *chunk.problems])[:MAX_REPORTED_ERRORS]
        total = self.feature_sum
        self.feature_sum = chunk.feature_sum if total is None else total + chunk.feature_sum

    def column(self, name: str) -> np.ndarray:
        """One field of every chunk, end to end (empty for a file with no lines)."""
        parts = [getattr(part, name) for part in self.parts]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def route_file(
    path: Path,
    out: Path,
    router: Router,
    policy: CampaignPolicy,
    *,
    fit_on_inputs: bool = False,
    n_jobs: int = 1,
    progress: Callable[[int], None] | None = None,
) -> tuple[RouteSummary, Router]:
    """Route the comparisons of JSONL file ``path`` as one ranked batch of ``policy`` on
    an empty ledger, writing one decision per line to ``out`` (see the module docstring).

    ``fit_on_inputs``: ``router``'s strategy learns nothing and takes its reference from
    the inputs, as ``Router.fit`` on them would (the router returned is the fitted one).
    A bad line raises one ``DatasetError`` for the file before ``out`` is created; a file
    without comparisons creates nothing and says ``n`` 0. ``progress`` is called with the
    number of comparisons read, then written, chunk by chunk.
    """
    with tempfile.TemporaryFile(dir=out.parent, prefix=".route-spool-") as spool:
        facts = _score_file(path, spool, _Pass1(router, policy), n_jobs, progress)
        n = sum(len(part.scores) for part in facts.parts)
        if n == 0:
            return RouteSummary(0, 0, 0, 0, 0), router
        scores = facts.column("scores")
        if fit_on_inputs:
            means = (facts.feature_sum / n).astype(np.float32)
            router = router.fit_reference(scores, means, n)
        batch = BatchFacts(
            scores,
            facts.column("forced"),
            facts.column("doubtful"),
            facts.column("unfillable_tie"),
            _IdLookup(facts.ids, facts.column("id_sizes")),
            _FeatureLookup(spool),
        )
        sizes = [len(part.scores) for part in facts.parts]
        del facts  # the batch's facts are all the plan and pass 2 need
        share = policy.share(router)
        plan = policy.plan_ranked(batch, LedgerState(), router, share)
        spool.seek(0)
        state = _Pass2(router, policy, replace(plan, outcomes=np.empty(0, dtype=np.int8)))
        with out.open("w", encoding="utf-8") as handle:
            tasks = _decision_tasks(spool, batch, plan, sizes)
            for text, rows in _in_workers(_decide_chunk, tasks, state, n_jobs):
                handle.write(text)
                if progress:
                    progress(rows)
    outcomes = plan.outcomes
    summary = RouteSummary(
        n,
        int(np.isin(outcomes, (Outcome.HUMAN, Outcome.AUDIT)).sum()),
        int((outcomes == Outcome.CERTIFIED).sum()),
        budget_count(share, n),
        int(batch.forced.sum()),
    )
    return summary, router


# -- pass 1: parse, validate, featurize, score -----------------------------------------------


def _score_file(
    path: Path,
    spool: IO[bytes],
    state: _Pass1,
    n_jobs: int,
    progress: Callable[[int], None] | None,
) -> _Facts:
    facts = _Facts()
    for chunk in _in_workers(_score_chunk, _chunks(path), state, n_jobs):
        facts.add(chunk)
        spool.write(RECORD_SIZE.pack(len(chunk.spool)) + chunk.spool)
        if progress:
            progress(len(chunk.scores))
    lines, hashes = facts.column("lines"), facts.column("id_hashes")
    lookup = _IdLookup(facts.ids, facts.column("id_sizes"))
    duplicates = _duplicates(lines, hashes, lookup)
    if facts.n_problems or duplicates:
        problems = sorted([*facts.problems, *duplicates[:MAX_REPORTED_ERRORS]])
        shown = [message for _, message in problems[:MAX_REPORTED_ERRORS]]
        raise DatasetError(str(path), shown, facts.n_problems + len(duplicates))
    return facts


def _chunks(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first line number, lines) of ``CHUNK_ROWS`` lines; utf-8-sig as ``read_comparisons``
    reads (editors often start a file with a byte order mark)."""
    with path.open(encoding="utf-8-sig") as handle:
        number = 1
        while lines := list(itertools.islice(handle, CHUNK_ROWS)):
            yield number, lines
            number += len(lines)


def _score_chunk(task: tuple[int, list[str]]) -> ChunkFacts:
    assert isinstance(_state, _Pass1)
    first, lines = task
    comparisons: list[Comparison] = []
    numbers: list[int] = []
    problems: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=first):
        if not line.strip():
            continue
        try:
            comparisons.append(parse_line(line, number, drop_labels=True))
            numbers.append(number)
        except ValueError as error:
            problems.append((number, str(error)))
    router, policy = _state.router, _state.policy
    signals = [judge_signals(c) for c in comparisons]  # once, for the features and the policy
    if comparisons:
        scores, features = router.score(comparisons, signals=signals)
    else:
        width = len(router.featurizer.feature_names_)
        scores, features = np.zeros(0), np.zeros((0, width), dtype=np.float32)
    forced, doubtful, unfillable_tie = _flags(signals, policy.can_prefill_tie)
    encoded = [c.id.encode() for c in comparisons]
    return ChunkFacts(
        lines=np.array(numbers, dtype=np.int64),
        ids=b"".join(encoded),
        id_sizes=np.array([len(e) for e in encoded], dtype=np.int64),
        id_hashes=np.array([_digest(e) for e in encoded], dtype=np.uint64),
        scores=np.asarray(scores, dtype=float),
        forced=forced,
        doubtful=doubtful,
        unfillable_tie=unfillable_tie,
        feature_sum=features.sum(axis=0, dtype=np.float64),
        problems=problems,
        spool=pickle.dumps((signals, features), pickle.HIGHEST_PROTOCOL),
    )


def _flags(
    signals: Sequence[JudgeSignals], can_prefill_tie: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``forced``, ``doubtful`` and ``unfillable_tie`` of each row's ``Scored`` (what
    ``CampaignPolicy.score`` makes of a comparison: judge signals, no problem), without
    making one per row (tests/test_route_streaming.py checks them against ``Scored``)."""
    unfillable = [not can_prefill_tie and s.ai_label is Label.TIE for s in signals]
    return (
        np.array([s.failed for s in signals], dtype=bool),
        np.array([s.doubtful or u for s, u in zip(signals, unfillable, strict=True)], dtype=bool),
        np.array(unfillable, dtype=bool),
    )


def _digest(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _duplicates(lines: np.ndarray, hashes: np.ndarray, ids: _IdLookup) -> list[tuple[int, str]]:
    """Each line whose id an earlier line has, as ``iter_comparisons`` words it; found by
    sorting 8-byte digests, then comparing the ids that share one."""
    order = np.argsort(hashes, kind="stable")  # rows are in line order: stable keeps it
    ordered = hashes[order]
    shared = np.flatnonzero(ordered[1:] == ordered[:-1])
    rows = np.unique(np.concatenate([order[shared], order[shared + 1]]))
    first: dict[str, int] = {}
    found = []
    for row, id_ in zip(rows, ids(rows), strict=True):
        if id_ in first:
            found.append((int(lines[row]), duplicate_id(int(lines[row]), id_, first[id_])))
        else:
            first[id_] = int(lines[row])
    return sorted(found)


# -- the plan's lookups ------------------------------------------------------------------------


class _IdLookup:
    """Rows' ids from the UTF-8 ids of every row, one after the other."""

    def __init__(self, data: bytearray, sizes: np.ndarray) -> None:
        self.data = data
        self.ends = np.cumsum(sizes)

    def __call__(self, rows: np.ndarray) -> list[str]:
        ends = self.ends[rows]
        starts = np.where(rows > 0, self.ends[np.maximum(rows - 1, 0)], 0)
        return [self.data[s:e].decode() for s, e in zip(starts, ends, strict=True)]


class _FeatureLookup:
    """Rows' feature rows, read back from the spool the first time the plan asks (only the
    ``hyper`` strategy does: its selection mixes the whole batch)."""

    def __init__(self, spool: IO[bytes]) -> None:
        self.spool = spool
        self.matrix: np.ndarray | None = None

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        if self.matrix is None:
            self.spool.seek(0)
            self.matrix = np.concatenate([features for _, features in _spooled(self.spool)])
        return self.matrix[rows]


def _spooled(spool: IO[bytes]) -> Iterator[tuple[list[JudgeSignals | None], np.ndarray]]:
    while header := spool.read(RECORD_SIZE.size):
        (size,) = RECORD_SIZE.unpack(header)
        yield pickle.loads(spool.read(size))


# -- pass 2: explain, decide, write -------------------------------------------------------------


def _decision_tasks(
    spool: IO[bytes], batch: BatchFacts, plan: RankedPlan, sizes: Sequence[int]
) -> Iterator[tuple[bytes, list[str], np.ndarray, np.ndarray]]:
    start = 0
    for size in sizes:
        (length,) = RECORD_SIZE.unpack(spool.read(RECORD_SIZE.size))
        rows = np.arange(start, start + size)
        yield spool.read(length), batch.ids(rows), batch.scores[rows], plan.outcomes[rows]
        start += size


def _decide_chunk(task: tuple[bytes, list[str], np.ndarray, np.ndarray]) -> tuple[str, int]:
    assert isinstance(_state, _Pass2)
    data, ids, scores, outcomes = task
    signals, features = pickle.loads(data)
    router, policy = _state.router, _state.policy
    plan = replace(_state.plan, outcomes=outcomes)
    reasons = router.explain_signals(features, signals)
    ledger = LedgerState()
    prefill = policy.can_prefill_tie
    lines = []
    for row, (id_, score, why, judged) in enumerate(
        zip(ids, scores.tolist(), reasons, signals, strict=True)
    ):
        s = Scored(id_, score, why, judged, can_prefill_tie=prefill)
        lines.append(_ENCODE(policy.ranked_decision(plan, row, s, ledger).to_record()))
    lines.append("")
    return "\n".join(lines), len(ids)


_ENCODE = json.JSONEncoder(ensure_ascii=False).encode
"""``json.dumps(record, ensure_ascii=False)`` (as ``write_jsonl`` writes a record), without
making an encoder per record."""


# -- the workers ------------------------------------------------------------------------------


def _in_workers(
    work: Callable[[T], R], tasks: Iterable[T], state: _Pass1 | _Pass2, n_jobs: int
) -> Iterator[R]:
    """``work`` on each task, results in task order: in ``n_jobs`` processes (each set up
    once with ``state``) fed ``AHEAD`` tasks each ahead of the results taken, or here."""
    if n_jobs <= 1:
        _set_state(state)
        try:
            yield from map(work, tasks)
        finally:
            _set_state(None)
        return
    with ProcessPoolExecutor(n_jobs, initializer=_set_state, initargs=(state,)) as pool:
        pending: deque[Future[R]] = deque()
        for task in tasks:
            pending.append(pool.submit(work, task))
            if len(pending) >= AHEAD * n_jobs:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
