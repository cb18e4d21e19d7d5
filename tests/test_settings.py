"""Settings: environment, per-project overrides, and the README's table staying true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hyper_ls_backend.settings import AIMode, JudgeProvider, Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_is_documented_in_the_readme() -> None:
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", README.read_text(encoding="utf-8")))
    missing = {name.upper() for name in Settings.model_fields} - documented
    assert not missing, f"settings missing from the README table: {sorted(missing)}"


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPER_BUDGET", "0.4")
    monkeypatch.setenv("HYPER_ANNOTATORS", "a@x.org, b@x.org")
    settings = Settings()
    assert settings.hyper_budget == 0.4
    assert settings.hyper_annotators == ["a@x.org", "b@x.org"]


def test_judge_defaults_to_anthropic_only_with_a_key() -> None:
    assert Settings(anthropic_api_key=None).judge_provider is JudgeProvider.NONE
    assert Settings(anthropic_api_key="k").judge_provider is JudgeProvider.ANTHROPIC


def test_project_overrides_apply_and_are_validated() -> None:
    base = Settings(hyper_budget=0.25)
    project = base.for_project('{"hyper_budget": 0.5, "hyper_ai_mode": "predict"}')
    assert project.hyper_budget == 0.5
    assert project.hyper_ai_mode is AIMode.PREDICT
    assert base.hyper_budget == 0.25
    with pytest.raises(ValueError, match="unknown extra params"):
        base.for_project({"database_url": "sqlite://"})
    with pytest.raises(ValueError, match="not a JSON object"):
        base.for_project("{nope")
    with pytest.raises(ValueError):
        base.for_project({"hyper_budget": 2})


def test_secrets_do_not_show_in_repr() -> None:
    settings = Settings(anthropic_api_key="sk-secret-value", label_studio_api_key="ls-secret")
    assert "sk-secret-value" not in repr(settings)
    assert "ls-secret" not in str(settings.model_dump())


def test_lm_prices_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPER_LM_PRICES", '{"local-llama": [0.2, 0.6]}')
    assert Settings().hyper_lm_prices == {"local-llama": (0.2, 0.6)}
