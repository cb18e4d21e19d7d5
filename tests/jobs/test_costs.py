"""Judge cost per task comes from the configurable price table."""

from __future__ import annotations

from pathlib import Path

from lm.fake_llm_server import FakeLLMServer
from server.harness import PROJECT, ScriptedJudge, judge_settings, serve, setup_body, task
from server.harness import tasks_created as tasks_created_event

from hyper_ls_backend.lm import DEFAULT_ANTHROPIC_MODEL


def test_judge_cost_per_task_uses_the_configured_prices(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge
) -> None:
    prices = {DEFAULT_ANTHROPIC_MODEL: (1_000_000.0, 0.0)}  # one dollar per input token
    settings = judge_settings(tmp_path, llm.base_url, hyper_lm_prices=prices)
    with serve(settings) as (client, model):
        client.post("/setup", json=setup_body())
        client.post("/webhook", json=tasks_created_event([task(1, "a")]))
        output = model.store.judge_output(PROJECT, 1)
    assert output.input_tokens > 0
    assert output.cost_usd == float(output.input_tokens)
