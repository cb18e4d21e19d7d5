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


JUDGES = (
    '[{"provider": "anthropic", "model": "claude-sonnet-4-6"},'
    ' {"provider": "openai", "model": "qwen", "base_url": "http://vllm:8000/v1",'
    '  "api_key_env": "VLLM_KEY", "logprobs": false}]'
)


def test_judges_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPER_JUDGES", JUDGES)

    settings = Settings()

    assert settings.hyper_judges is not None
    assert [(j.provider, j.model) for j in settings.hyper_judges] == [
        ("anthropic", "claude-sonnet-4-6"),
        ("openai", "qwen"),
    ]
    assert settings.hyper_judges[1].api_key_env == "VLLM_KEY"
    assert settings.for_project({"hyper_budget": 0.3}).hyper_judges == settings.hyper_judges
    assert Settings(hyper_judges=None).hyper_judges is None
    assert Settings().hyper_judge_logprobs is True


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{nope", "HYPER_JUDGES is not valid JSON: Expecting property name"),
        ('{"provider": "openai"}', "HYPER_JUDGES must be a JSON list of judges"),
        ("[]", "HYPER_JUDGES must be a JSON list of judges"),
        (
            '[{"provider": "anthropic", "model": "c"}, {"provider": "openai", "model": "q"}]',
            "HYPER_JUDGES entry 2 of 2 (model 'q'): base_url is required for provider openai",
        ),
        (
            '[{"provider": "vllm", "model": "q"}]',
            "HYPER_JUDGES entry 1 of 1 (model 'q'): provider: Input should be 'anthropic' or",
        ),
        ('[{"provider": "anthropic"}]', "HYPER_JUDGES entry 1 of 1: model: Field required"),
        ('[{"provider": "anthropic", "model": ""}]', "model: String should have at least 1"),
        ('["claude"]', "HYPER_JUDGES entry 1 of 1: Input should be a valid dictionary"),
        ('[{"provider": "anthropic", "model": "c", "key": "x"}]', "key: Extra inputs"),
        (
            '[{"provider": "anthropic", "model": "c", "logprobs": true}]',
            "logprobs applies to provider openai only",
        ),
    ],
)
def test_judges_are_validated_entry_by_entry(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("HYPER_JUDGES", value)

    with pytest.raises(ValueError) as raised:
        Settings()

    assert message in str(raised.value)


def test_a_key_pasted_as_api_key_env_is_refused_and_never_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = "sk-ant-api03-very-secret"
    monkeypatch.setenv(
        "HYPER_JUDGES", f'[{{"provider": "anthropic", "model": "c", "api_key_env": "{key}"}}]'
    )

    with pytest.raises(ValueError) as raised:
        Settings()

    assert "api_key_env: must be the name of an environment variable" in str(raised.value)
    assert key not in str(raised.value)
