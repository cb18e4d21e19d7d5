"""The import inbox: webhooks' imports stored as received, recorded and routed after."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyper_ls_backend.server import inbox as inbox_module
from hyper_ls_backend.server.inbox import ImportInbox
from hyper_ls_backend.server.model import HyperModel

from .harness import CONFIG_5POINT, PROJECT, make_settings, serve, task, wait_until


class NotedRoutes(list):
    """Stands for the queue's ``route``: notes each (project, task ids) it is given."""

    def __call__(self, project_id: int, task_ids: list[int]) -> None:
        self.append((project_id, task_ids))


@pytest.fixture
def routed() -> NotedRoutes:
    return NotedRoutes()


@pytest.fixture
def model(tmp_path: Path, routed: NotedRoutes) -> Iterator[HyperModel]:
    """A set-up model whose queue only notes what it is asked to route."""
    built = HyperModel.build(make_settings(tmp_path), immediate=False)
    built.setup(PROJECT, CONFIG_5POINT, None)
    built.queue.route = routed  # type: ignore[method-assign]
    yield built
    built.stop()


def started(model: HyperModel, quiet: float, most_delay: float) -> ImportInbox:
    model.inbox = ImportInbox(model.store, model.queue, quiet=quiet, most_delay=most_delay)
    model.inbox.start()
    return model.inbox


def test_imports_received_at_once_are_recorded_and_routed_in_order(
    model: HyperModel, routed: NotedRoutes
) -> None:
    inbox = started(model, quiet=0.05, most_delay=60.0)
    barrier = threading.Barrier(10)

    def receive(c: int) -> None:
        barrier.wait()
        inbox.receive(PROJECT, [task(i) for i in range(10 * c + 1, 10 * c + 11)])

    threads = [threading.Thread(target=receive, args=(c,)) for c in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_until(lambda: sum(len(ids) for _, ids in routed) >= 100, what="the imports routed")
    assert sorted(i for _, ids in routed for i in ids) == list(range(1, 101))
    assert {project for project, _ in routed} == {PROJECT}
    assert model.store.received_count() == 0
    imports = [model.store.import_of(PROJECT, 10 * c + 1) for c in range(10)]
    assert sorted(imports) == [list(range(10 * c + 1, 10 * c + 11)) for c in range(10)]


def test_an_import_waits_no_longer_than_most_delay_while_imports_may_still_come(
    model: HyperModel, routed: NotedRoutes
) -> None:
    inbox = started(model, quiet=600.0, most_delay=0.2)
    inbox.receive(PROJECT, [task(1), task(2)])
    wait_until(lambda: routed, timeout=30, what="the import routed")
    assert routed == [(PROJECT, [1, 2])]


def test_stopping_records_and_routes_what_was_received(
    model: HyperModel, routed: NotedRoutes
) -> None:
    inbox = started(model, quiet=600.0, most_delay=600.0)
    inbox.receive(PROJECT, [task(1)])
    inbox.stop()
    assert routed == [(PROJECT, [1])]
    assert model.store.task(PROJECT, 1) is not None


def test_recording_that_fails_is_tried_again(
    model: HyperModel,
    routed: NotedRoutes,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(inbox_module, "RETRY", 0.05)
    record = model.store.record_received
    failures = iter([True])

    def flaky() -> list:
        if next(failures, False):
            raise OSError("disk unplugged")
        return record()

    monkeypatch.setattr(model.store, "record_received", flaky)
    inbox = started(model, quiet=0.01, most_delay=0.1)
    with caplog.at_level(logging.ERROR, logger=inbox_module.__name__):
        inbox.receive(PROJECT, [task(7)])
        wait_until(lambda: routed, timeout=30, what="the import routed")
    assert routed == [(PROJECT, [7])]
    assert "received imports not recorded" in caplog.text and "disk unplugged" in caplog.text


def test_imports_left_received_by_a_stopped_process_are_routed_at_the_next_start(
    tmp_path: Path,
) -> None:
    """A process killed after answering the webhooks, before recording their imports."""
    settings = make_settings(tmp_path)
    killed = HyperModel.build(settings, immediate=True)
    killed.setup(PROJECT, CONFIG_5POINT, None)
    killed.store.receive_imports([(PROJECT, [task(1), task(2)]), (PROJECT, [task(3)])])
    with serve(settings) as (_, model):
        assert model.store.received_count() == 0
        assert model.store.import_of(PROJECT, 1) == [1, 2]
        assert model.store.import_of(PROJECT, 3) == [3]
        assert sum(model.store.decision_counts().values()) == 3  # no judge: humans
