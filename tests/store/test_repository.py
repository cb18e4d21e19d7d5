"""The Store: one decision per task, a budget ledger that holds under concurrency, labels.

Every test runs on SQLite and on a real PostgreSQL server (marker ``postgres``)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect, text

from hyper_ls_backend.core.comparison import Label
from hyper_ls_backend.core.policy import Decision, LedgerState, Route
from hyper_ls_backend.store import Store
from hyper_ls_backend.store.repository import add_missing_columns, add_missing_indexes
from hyper_ls_backend.store.schema import Project
from store.test_writers import wait_for

P = 7

OpenStore = Callable[[], Store]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: a SQLite file, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'hyper.sqlite3'}"
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture
def open_store(db_url: str) -> Iterator[OpenStore]:
    """Opens Stores on the test's database, as separate worker processes would; each is
    closed at teardown."""
    opened: list[Store] = []

    def open_() -> Store:
        opened.append(Store(db_url))
        return opened[-1]

    yield open_
    for store in opened:
        store.engine.dispose()


@pytest.fixture
def store(open_store: OpenStore) -> Store:
    return open_store()


def decision(route: str = "human", score: float = 0.0, **fields: Any) -> Decision:
    return Decision("t", Route(route), score, ["test"], model_version="test-v1", **fields)


Decide = Callable[[LedgerState, list[int]], list[Decision]]


def each(make: Callable[[LedgerState], Decision]) -> Decide:
    """A ``Store.decide`` callback giving every undecided task ``make(ledger)``."""
    return lambda ledger, undecided: [make(ledger) for _ in undecided]


def one(route: str = "human", score: float = 0.0) -> Decide:
    return each(lambda _: decision(route, score))


def tasks(*ids: int) -> list[dict[str, Any]]:
    return [{"id": i, "data": {"prompt": f"p{i}"}} for i in ids]


# -- one decision per task ------------------------------------------------------------------


def test_decide_makes_a_decision_once_and_returns_it_afterwards(store: Store) -> None:
    calls: list[LedgerState] = []

    def decide(ledger: LedgerState) -> Decision:
        calls.append(ledger)
        return decision("ai", 0.5)

    made = store.decide(P, [1], each(decide))
    made_again = store.decide(P, [1], one("human"))
    assert len(made) == 1 and not made_again
    assert len(calls) == 1
    again = store.decision(P, 1)
    assert (again.route, again.sequence, again.score) == (Route.AI, 1, 0.5)
    assert again.decision() == Decision("1", Route.AI, 0.5, ["test"], model_version="test-v1")


def test_decide_called_concurrently_from_threads_makes_one_decision(store: Store) -> None:
    calls = []
    barrier = threading.Barrier(16)

    def decide(ledger: LedgerState) -> Decision:
        calls.append(ledger)
        time.sleep(0.01)  # widen the window a second decision would need
        return decision("human" if len(calls) % 2 else "ai")

    def attempt(_: int) -> tuple[str, int, bool]:
        barrier.wait()
        made = store.decide(P, [1], each(decide))
        record = store.decision(P, 1)
        return record.route, record.sequence, bool(made)

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(attempt, range(16)))
    assert len(calls) == 1
    assert sum(made for _, _, made in outcomes) == 1
    assert len({(route, seq) for route, seq, _ in outcomes}) == 1
    assert store.decision_counts() == {(P, outcomes[0][0]): 1}


def test_two_stores_on_one_database_never_decide_a_task_twice(open_store: OpenStore) -> None:
    """Two worker processes each have their own Store: only the database can serialize."""
    stores = [open_store(), open_store()]
    barrier = threading.Barrier(12)
    made = []

    def attempt(i: int) -> None:
        barrier.wait()
        now = stores[i % 2].decide(P, [1], each(lambda _: (time.sleep(0.01), decision())[1]))
        made.append(bool(now))

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(attempt, range(12)))
    assert made.count(True) == 1
    assert stores[0].decision_counts() == {(P, "human"): 1}


# -- the budget ledger ----------------------------------------------------------------------


def budget_rule(budget: float) -> Any:
    """Human whenever the ledger has room: the most a correct ledger may ever allow."""

    def decide(ledger: LedgerState) -> Decision:
        time.sleep(0.001)
        room = math.floor(budget * (ledger.n_decided + 1) + 1e-9) - ledger.n_human
        return decision("human" if room > 0 else "ai", float(ledger.n_decided))

    return each(decide)


@pytest.mark.parametrize("n_stores", [1, 2], ids=["one-store", "two-stores"])
def test_concurrent_decisions_never_exceed_the_budget(open_store: OpenStore, n_stores: int) -> None:
    budget, n = 0.3, 60
    stores = [open_store() for _ in range(n_stores)]
    rule = budget_rule(budget)
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda t: stores[t % n_stores].decide(P, [t], rule), range(1, n + 1)))
    records = sorted((stores[0].decision(P, t) for t in range(1, n + 1)), key=lambda r: r.sequence)
    assert [r.sequence for r in records] == list(range(1, n + 1))
    n_human = 0
    for k, record in enumerate(records, start=1):
        n_human += record.route is Route.HUMAN
        assert n_human <= math.floor(budget * k + 1e-9), f"over budget after {k} decisions"
        assert record.score == k - 1  # each decision saw every earlier one in its ledger
    assert n_human == math.floor(budget * n)


def test_the_ledger_counts_decided_human_recent_scores_and_labels(store: Store) -> None:
    seen: list[LedgerState] = []

    def record(route: str, score: float) -> Decide:
        def decide(ledger: LedgerState) -> Decision:
            seen.append(ledger)
            return decision(route, score)

        return each(decide)

    store.record_tasks(P, tasks(1, 2, 3, 4))
    store.decide(P, [1], record("human", 0.9))
    store.decide(P, [2], record("ai", 0.1))
    store.save_human_label(1, project_id=P, task_id=1, label="tie", choice="Tie")
    store.save_human_label(2, project_id=P, task_id=1, label="A", choice="A")
    store.decide(P, [3], record("human", 0.7))
    store.decide(P, [4], record("ai", 0.2))
    store.decide(P + 1, [1], record("ai", 0.3))  # another project has its own ledger
    assert [(x.n_decided, x.n_human, x.human_labels, x.human_ties) for x in seen] == [
        (0, 0, 0, 0),
        (1, 1, 0, 0),
        (2, 1, 2, 1),
        (3, 2, 2, 1),
        (0, 0, 0, 0),
    ]
    assert seen[3].recent_scores == (0.9, 0.1, 0.7)
    assert store.decision(P + 1, 1).sequence == 1


def test_a_batch_is_decided_in_one_transaction_in_the_order_given(store: Store) -> None:
    store.record_tasks(P, tasks(1, 2, 3, 4))
    store.decide(P, [2], one("ai"))
    given: list[list[int]] = []

    def decide(ledger: LedgerState, undecided: list[int]) -> list[Decision]:
        given.append(undecided)
        return [decision("human", float(t)) for t in undecided]

    made = store.decide(P, [4, 1, 2, 3], decide)
    assert given == [[4, 1, 3]]  # the decided one is left out
    assert [(r.task_id, r.sequence, r.score) for r in made] == [
        (4, 2, 4.0),
        (1, 3, 1.0),
        (3, 4, 3.0),
    ]
    store.record_tasks(P, tasks(5))
    with pytest.raises(ValueError, match="2 decisions for 1 tasks"):
        store.decide(P, [5], lambda _, ids: [decision(), decision()])
    assert store.decision(P, 5) is None


def test_a_task_given_none_is_left_undecided_and_takes_no_sequence(store: Store) -> None:
    store.record_tasks(P, tasks(1, 2, 3))

    def some(ledger: LedgerState, undecided: list[int]) -> list[Decision | None]:
        return [None if t == 2 else decision("ai", float(t)) for t in undecided]

    made = store.decide(P, [1, 2, 3], some)
    assert [(r.task_id, r.sequence) for r in made] == [(1, 1), (3, 2)]
    assert store.decision(P, 2) is None
    later = store.decide(P, [1, 2, 3], one("human"))
    assert [(r.task_id, r.sequence, r.route) for r in later] == [(2, 3, Route.HUMAN)]


def test_the_decision_given_is_the_decision_stored(store: Store) -> None:
    given = Decision(
        "1",
        Route.HUMAN,
        0.25,
        ["audit: ...", "why"],
        audit=True,
        inclusion_probability=0.04,
        judge_label=Label.TIE,
        judge_confidence=0.3,
        model_version="v7",
    )
    store.decide(P, [1], lambda _, ids: [given])
    assert store.decision(P, 1).decision() == given
    assert store.labelled_comparisons(P) == []


# -- tasks ----------------------------------------------------------------------------------


def test_record_tasks_keeps_the_first_payload_and_counts_new_tasks(store: Store) -> None:
    assert store.record_tasks(P, tasks(1, 2)) == 2
    changed = [{"id": 2, "data": {"prompt": "changed"}}, *tasks(3)]
    assert store.record_tasks(P, changed) == 1
    assert store.task(P, 2).payload["data"]["prompt"] == "p2"
    assert store.task(P + 1, 1) is None


def test_each_record_tasks_with_new_tasks_is_one_import(store: Store) -> None:
    store.record_tasks(P, tasks(3, 1, 2))
    store.record_tasks(P, tasks(2, 4))  # a duplicated task stays in its first import
    store.record_tasks(P, tasks(1, 2))  # nothing new: no import
    store.record_tasks(P + 1, tasks(9))
    assert store.import_of(P, 2) == [1, 2, 3]
    assert store.import_of(P, 4) == [4]
    assert store.import_of(P + 1, 9) == [9]
    assert [r.import_batch for r in store.tasks(P, [1, 4])] == [1, 2]


def test_received_imports_are_recorded_in_order_of_arrival_then_forgotten(
    store: Store,
) -> None:
    store.receive_imports([(P, tasks(3, 1)), (P, tasks(1, 2)), (P + 1, tasks(1))])
    store.receive_imports([(P, tasks(4))])
    assert store.received_count() == 4 and store.task(P, 1) is None  # not recorded yet
    assert store.record_received(limit=2) == [(P, tasks(3, 1)), (P, tasks(1, 2))]
    assert store.import_of(P, 3) == [1, 3] and store.import_of(P, 2) == [2]
    assert store.record_received() == [(P + 1, tasks(1)), (P, tasks(4))]
    assert store.import_of(P, 4) == [4] and store.import_of(P + 1, 1) == [1]
    assert store.record_received() == [] and store.received_count() == 0


def test_stores_recording_received_imports_at_once_record_each_once(
    open_store: OpenStore,
) -> None:
    """As the worker processes of one server do: each import goes to one of them."""
    stores = [open_store(), open_store()]
    for c in range(20):
        stores[0].receive_imports([(P, tasks(2 * c, 2 * c + 1))])
    barrier = threading.Barrier(2)

    def record(store: Store) -> list[Any]:
        barrier.wait()
        recorded = []
        while imports := store.record_received(limit=3):
            recorded.extend(imports)
        return recorded

    with ThreadPoolExecutor(2) as pool:
        recorded = [i for imports in pool.map(record, stores) for i in imports]
    assert sorted(t["id"] for _, ts in recorded for t in ts) == list(range(40))
    assert [stores[0].import_of(P, 2 * c) for c in range(20)] == [
        [2 * c, 2 * c + 1] for c in range(20)
    ]


def test_a_database_of_the_previous_version_starts_and_gains_the_new_columns(
    open_store: OpenStore,
) -> None:
    old = open_store()
    old.record_tasks(P, tasks(1, 2))
    old.decide(P, [1], one("ai", 0.5))
    with old.engine.begin() as connection:  # the previous version had neither column
        connection.execute(text("DROP INDEX ix_tasks_import"))
        connection.execute(text("ALTER TABLE tasks DROP COLUMN import_batch"))
        connection.execute(text("ALTER TABLE decisions DROP COLUMN inclusion_probability"))
    old.engine.dispose()

    upgraded = open_store()
    assert add_missing_columns(upgraded.engine) == []  # the new Store added them
    assert add_missing_indexes(upgraded.engine) == []
    assert "ix_tasks_import" in {i["name"] for i in inspect(upgraded.engine).get_indexes("tasks")}
    assert upgraded.undecided_tasks() == [(P, 2)]
    assert upgraded.import_of(P, 2) == [2]  # no recorded import: decided on its own
    assert upgraded.decision(P, 1).decision().inclusion_probability == 1.0
    upgraded.record_tasks(P, tasks(3, 4))
    assert upgraded.import_of(P, 3) == [3, 4]


def test_record_tasks_with_a_duplicate_inside_one_batch(store: Store) -> None:
    assert store.record_tasks(P, tasks(1, 1, 2)) == 2
    assert {t for _, t in store.undecided_tasks()} == {1, 2}


def test_concurrent_record_tasks_of_the_same_tasks_all_succeed(open_store: OpenStore) -> None:
    stores = [open_store() for _ in range(3)]
    batch = tasks(*range(1, 51))
    barrier = threading.Barrier(9)

    def record(i: int) -> int:
        barrier.wait()
        return stores[i % 3].record_tasks(P, batch)

    with ThreadPoolExecutor(9) as pool:
        fresh = list(pool.map(record, range(9)))
    assert sum(fresh) == 50
    assert len(stores[0].undecided_tasks()) == 50


def test_imports_recorded_in_one_transaction_are_each_an_import_of_their_own(
    store: Store,
) -> None:
    first = [{"id": 2, "data": {"prompt": "first"}}]
    counts = store.record_imports(
        [(P, tasks(1) + first), (P, tasks(2, 3)), (P, tasks(1, 2)), (P + 1, tasks(1))]
    )
    assert counts == [2, 1, 0, 1]
    assert store.import_of(P, 1) == [1, 2] and store.import_of(P, 3) == [3]
    assert store.import_of(P + 1, 1) == [1]
    assert store.task(P, 2).payload == first[0]  # the first payload is kept
    assert store.record_tasks(P, tasks(4)) == 1
    assert store.import_of(P, 4) == [4]


def test_imports_recorded_from_many_threads_at_once_stay_apart(store: Store) -> None:
    barrier = threading.Barrier(16)

    def record(c: int) -> int:
        barrier.wait()
        return store.record_tasks(P, tasks(*range(10 * c, 10 * c + 10)))

    with ThreadPoolExecutor(16) as pool:
        fresh = list(pool.map(record, range(32)))
    assert fresh == [10] * 32
    imports = [store.import_of(P, 10 * c) for c in range(32)]
    assert imports == [list(range(10 * c, 10 * c + 10)) for c in range(32)]


def test_a_read_does_not_wait_for_a_write_under_way(store: Store) -> None:
    store.save_project(P, "<View/>", {})
    with store.session() as s:
        s.add(Project(id=P + 1, label_config="", extra_params={}))
        s.flush()
        start = time.perf_counter()
        assert store.project(P) is not None and store.project(P + 1) is None  # not committed
        assert time.perf_counter() - start < 5  # SQLite's busy timeout is 30 s
    assert store.project(P + 1) is not None


def test_undecided_tasks_are_the_received_ones_without_a_decision_oldest_first(
    store: Store,
) -> None:
    store.record_tasks(P, tasks(5, 3))
    store.record_tasks(P + 1, tasks(1))
    store.record_tasks(P, tasks(4))
    store.decide(P, [3], one())
    assert store.undecided_tasks() == [(P, 5), (P + 1, 1), (P, 4)]


def test_unwritten_decisions_until_marked_written(store: Store) -> None:
    store.decide(P, [1], one("ai"))
    store.decide(P, [2], one("human"))
    assert [d.task_id for d in store.unwritten_decisions()] == [1, 2]
    store.mark_written(P, {1: (10, 20)})
    assert [d.task_id for d in store.unwritten_decisions()] == [2]
    written = store.decision(P, 1)
    assert written.written_at is not None
    assert (written.prediction_id, written.annotation_id) == (10, 20)


def test_decision_counts_per_project_and_route(store: Store) -> None:
    for task_id, route in enumerate(["ai", "human", "ai"], start=1):
        store.decide(P, [task_id], one(route))
    store.decide(P + 1, [1], one("human"))
    assert store.decision_counts() == {(P, "ai"): 2, (P, "human"): 1, (P + 1, "human"): 1}


def test_state_survives_a_new_store_on_the_same_database(open_store: OpenStore) -> None:
    first = open_store()
    first.save_project(P, "<View/>", {"hyper_budget": 0.5})
    first.record_tasks(P, tasks(1, 2))
    first.decide(P, [1], one("ai"))
    first.engine.dispose()
    second = open_store()
    assert second.project(P).extra_params == {"hyper_budget": 0.5}
    assert second.undecided_tasks() == [(P, 2)]
    made = second.decide(P, [1], one("human"))
    assert not made and second.decision(P, 1).route is Route.AI


# -- human labels and the tag cache ---------------------------------------------------------


def label(**fields: Any) -> dict[str, Any]:
    return {"project_id": P, "task_id": 1, "label": "A", "choice": "A", **fields}


def test_human_labels_are_updated_by_annotation_and_soft_deleted(store: Store) -> None:
    store.save_human_label(11, **label())
    store.save_human_label(12, **label(task_id=2, label="tie", choice="Tie"))
    store.save_human_label(11, **label(label="B", choice="B-is-clearly-better", strength="clear"))
    store.save_human_label(13, **label(project_id=P + 1))
    labels = {x.annotation_id: x for x in store.human_labels(P)}
    assert set(labels) == {11, 12}
    assert (labels[11].label, labels[11].strength) == ("B", "clear")
    assert store.delete_human_labels([11, 999]) == 1
    assert [x.annotation_id for x in store.human_labels(P)] == [12]
    assert store.delete_human_labels([]) == 0


def test_a_refit_is_claimed_once_every_n_labels_saved_whatever_deletions_and_updates(
    store: Store,
) -> None:
    """The trigger counts labels saved since the last refit, not the number of labels:
    the latter steps back on a deletion and can pass a multiple between two events."""
    store.save_project(P, "<View/>", {})
    store.save_human_label(11, **label())
    store.save_human_label(12, **label(task_id=2))
    store.delete_human_labels([12])
    assert not store.claim_refit(P, 3)
    store.save_human_label(11, **label(label="B", choice="B"))  # a changed label counts
    assert store.claim_refit(P, 3)
    assert not store.claim_refit(P, 3)  # claimed: the count starts again
    store.save_human_label(13, **label(task_id=3))
    store.begin_refit(P)  # a refit (e.g. from Start training) starts the count again too
    store.save_human_label(14, **label(task_id=4))
    assert store.project(P).labels_since_refit == 1


def test_of_n_labels_arriving_at_once_exactly_one_queues_the_refit(
    open_store: OpenStore,
) -> None:
    """Each event saves its label, then claims: whichever claim first sees all eight
    takes the refit, and no other can."""
    stores = [open_store(), open_store()]
    stores[0].save_project(P, "<View/>", {})
    barrier = threading.Barrier(8)

    def arrive(i: int) -> bool:
        barrier.wait()
        stores[i % 2].save_human_label(100 + i, **label(task_id=i))
        return stores[i % 2].claim_refit(P, 8)

    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(arrive, range(8)))
    assert sum(claims) == 1
    assert stores[0].project(P).labels_since_refit == 0


def test_refits_are_recorded_oldest_first_with_their_reasons(store: Store) -> None:
    store.record_refit(P, 5, None, False, "prior", None, "only 5 labelled tasks")
    store.record_refit(P, 40, "v1", True, "v1", 0.7, "it ranks better")
    store.record_refit(P + 1, 3, None, False, "prior", None, "other project")
    assert [(r.n_labels, r.candidate, r.in_use, r.reason) for r in store.refits(P)] == [
        (5, None, "prior", "only 5 labelled tasks"),
        (40, "v1", "v1", "it ranks better"),
    ]


def test_forced_tasks_that_could_not_be_read_are_counted(store: Store) -> None:
    store.record_tasks(P, tasks(1, 2, 3))
    store.save_comparison(P, 1, None, "no prompt")
    store.save_comparison(P, 2, {"id": "2"}, None)
    store.decide(P, [1, 2], each(lambda _: decision(forced=True)))
    store.decide(P, [3], one("human"))
    assert store.route_counts(P)["forced"] == 2
    assert store.forced_unreadable(P) == 1


def save_output(store: Store, task_id: int) -> None:
    failed = {"error": "timeout"} if task_id % 2 else {}  # another set of columns
    store.save_judge_output(P, task_id, verdict={"n": task_id}, calls=[], **failed)


def save_comparison(store: Store, task_id: int) -> None:
    store.save_comparison(P, task_id, {"prompt": f"p{task_id}"}, None)


@pytest.mark.parametrize("save", [save_output, save_comparison])
def test_saves_made_at_once_share_a_transaction(
    store: Store, save: Callable[[Store, int], None]
) -> None:
    """Judge outputs and comparisons saved while one commits wait, then commit together,
    each landing as given."""
    store.record_tasks(P, tasks(*range(1, 9)))
    commits, held = [], threading.Event()

    @event.listens_for(store.engine, "commit")
    def hold_the_first(_connection: Any) -> None:
        commits.append(1)
        if len(commits) == 1:
            held.wait(timeout=10)

    group = store._judge_outputs if save is save_output else store._comparisons
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(save, store, 1)
        wait_for(lambda: len(commits) == 1)
        rest = [pool.submit(save, store, t) for t in range(2, 9)]
        wait_for(lambda: len(group._queued) == 7)
        held.set()
        for future in [first, *rest]:
            future.result(timeout=10)
    event.remove(store.engine, "commit", hold_the_first)
    assert len(commits) == 2  # the first alone, then the seven others at once
    outputs = store.judge_outputs(P, list(range(1, 9)))
    if save is save_output:
        assert {t: (o.verdict, o.error) for t, o in outputs.items()} == {
            t: ({"n": t}, "timeout" if t % 2 else None) for t in range(1, 9)
        }
    else:
        assert [store.task(P, t).comparison for t in range(1, 9)] == [
            {"prompt": f"p{t}"} for t in range(1, 9)
        ]


def test_tag_cache_round_trip(store: Store) -> None:
    assert store.get("k") is None
    store.put("k", {"subject": "law"})
    store.put("k", {"subject": "math"})
    assert store.get("k") == {"subject": "math"}


def test_projects_are_saved_and_replaced(store: Store) -> None:
    assert store.project(P) is None
    store.save_project(P, "<View>1</View>", {})
    store.save_project(P, "<View>2</View>", {"hyper_budget": 0.1})
    project = store.project(P)
    assert (project.label_config, project.extra_params) == ("<View>2</View>", {"hyper_budget": 0.1})


def test_rejected_router_versions_are_kept_and_leave_the_active_one(store: Store) -> None:
    store.record_router(P, "v1", {"w": 1}, {"auc": 0.7}, adopt=True)
    store.record_router(P, "v2", {"w": 2}, {"auc": 0.6}, adopt=False)
    store.record_router(P, "v3", {"w": 3}, {"auc": 0.8}, adopt=True)
    store.record_router(P, "v3", {"w": 3}, {"auc": 0.8}, adopt=True)  # a replayed refit

    versions = [
        (v.version, v.active, v.adopted, v.quality["auc"]) for v in store.router_versions(P)
    ]

    assert versions == [
        ("v1", False, True, 0.7),
        ("v2", False, False, 0.6),
        ("v3", True, True, 0.8),
    ]
    assert store.active_router(P).version == "v3"


def test_concurrent_saves_of_one_key_from_two_stores_all_succeed(open_store: OpenStore) -> None:
    """Two worker processes tagging the same prompt, or judging a task again after a
    restart, save the same key at the same moment: the last save wins, none fails."""
    stores = [open_store(), open_store()]
    barrier = threading.Barrier(8)

    def save(i: int) -> None:
        barrier.wait()
        stores[i % 2].put("k", {"subject": f"s{i}"})
        stores[i % 2].save_judge_output(P, 1, verdict={"label": "A"}, calls=[i])
        stores[i % 2].save_human_label(11, **label(choice=f"c{i}"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(save, range(8)))
    assert stores[0].get("k")["subject"] in {f"s{i}" for i in range(8)}
    assert len(stores[0].judge_output(P, 1).calls) == 1
    assert len(stores[0].human_labels(P)) == 1


def test_only_sqlite_and_postgresql_are_accepted() -> None:
    with pytest.raises(ValueError, match="SQLite or PostgreSQL, not mysql"):
        Store("mysql+pymysql://user@localhost/hyper")
