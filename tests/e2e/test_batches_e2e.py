"""An import judged through the Message Batches API, end to end (issue 10, item 3).

A real Label Studio, the real backend (``hyper-ls serve``) and its real ``anthropic`` SDK,
against the fake server's Message Batches API (``tests/lm/fake_llm_server.py``). The
import is big enough for ``HYPER_JUDGE_BATCH=auto``; the backend is killed (SIGKILL) while
it polls the batch, started again, and must poll the same batch, never send it again, and
route every task at the batch price. ``benchmarks/batch_import.py`` runs the same with
2,000 tasks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from label_studio_sdk import LabelStudio
from lm.fake_llm_server import FakeLLMServer, Recorded, anthropic_error

from e2e.backend import ScriptedJudge, comparison_data, start_fake_judge, wait_for
from e2e.conftest import SLOW_REPLY_S, Connect, StartBackend
from e2e.reading import import_tasks, wait_until_routed
from hyper_ls_backend.lm.pricing import PriceTable
from hyper_ls_backend.ls.client import ROUTE_FIELD

pytestmark = pytest.mark.label_studio

N = 240
"""Above ``HYPER_JUDGE_BATCH_MIN`` (200), so ``auto`` batches it."""
ERRORED, EXPIRED = "t5", "t7"
"""The task whose A-B request errors in the batch, and the one whose requests expire."""
MODEL = "claude-sonnet-4-6"


@pytest.fixture
def batch_judge() -> Iterator[tuple[FakeLLMServer, ScriptedJudge]]:
    server, judge = start_fake_judge(SLOW_REPLY_S)
    yield server, judge
    server.stop()


def batched_ab_of(key: str) -> Callable[[Recorded], bool]:
    """The batched A-B request of the task ``key``."""

    def accepts(request: Recorded) -> bool:
        text = request.user_text()
        return (
            "/batches/" in request.path
            and f"<<{key}>>" in text
            and text.index("ALPHA") < text.index("BETA")
        )

    return accepts


def test_a_batched_import_survives_a_kill_while_polling_and_is_routed_at_half_price(
    ls_client: LabelStudio,
    start_backend: StartBackend,
    connect: Connect,
    batch_judge: tuple[FakeLLMServer, ScriptedJudge],
) -> None:
    server, judge = batch_judge
    server.batch_seconds = 3600  # in flight until the test lets it end
    server.script(anthropic_error(529, "overloaded"), when=batched_ab_of(ERRORED))
    server.expire_in_batch = lambda request: f"<<{EXPIRED}>>" in request.user_text()
    backend = start_backend(
        HYPER_JUDGE_BATCH="auto",
        HYPER_JUDGE_BATCH_POLL="0.2",
        HYPER_JUDGE_BASE_URL=server.base_url,
        HYPER_JUDGE_MODEL=MODEL,
    )
    project_id = connect(backend, "e2e: a batched import")
    data = [comparison_data(f"t{i}", "a-clear" if i % 3 else "b-slight") for i in range(N)]

    imported = import_tasks(ls_client, project_id, data)
    batch = wait_for(
        lambda: next((b for b in server.batches.values() if b.retrieved >= 3), None),
        timeout=120,
        interval=0.2,
        what="the backend polling its batch",
    )
    status, in_flight = backend.request("GET", f"/status?project={project_id}")
    backend.kill()
    server.batch_seconds = 0
    backend.start()
    tasks, seconds = wait_until_routed(ls_client, project_id, N, timeout=300)
    print(f"\n[timing] {N} batched tasks routed {seconds:.1f} s after the restart")
    status, after = backend.request("GET", f"/status?project={project_id}")

    assert status == 200
    assert [b["requests"] for b in in_flight["batches"]["in_flight"]] == [2 * N]
    assert in_flight["batches"]["in_flight"][0]["batch_id"] == batch.id
    assert len(server.batches) == 1 and len(batch.requests) == 2 * N  # sent once
    assert sorted(t.id for t in tasks) == imported
    assert sum(Counter(t.data[ROUTE_FIELD] for t in tasks).values()) == N
    # Only the failed requests were asked one by one: t5's A-B order, both orders of t7.
    direct = [r for r in server.requests if r.path == "/v1/messages"]
    assert sorted(judge_key(r) for r in direct) == [ERRORED, EXPIRED, EXPIRED]
    assert judge.attempts(ERRORED) == {False: 1, True: 1}

    listed = PriceTable().cost(MODEL, 100, 20)
    batches = after["batches"]
    assert batches["in_flight"] == [] and batches["sent"] == 1
    assert batches["calls"] == 2 * N - 3
    assert batches["cost_usd"] == pytest.approx((2 * N - 3) * listed / 2)
    assert batches["list_cost_usd"] == pytest.approx(2 * batches["cost_usd"])
    spend = after["spend"]
    assert spend["comparisons_judged"] == N
    assert spend["cost_usd"] == pytest.approx(batches["cost_usd"] + 3 * listed)
    assert spend["cost_per_1000_comparisons_usd"] == pytest.approx(1000 * spend["cost_usd"] / N)


def judge_key(request: Recorded) -> str:
    text = request.user_text()
    return text.split("<<", 1)[1].split(">>", 1)[0]
