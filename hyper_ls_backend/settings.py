"""One ``Settings`` object, built at the edge from the environment and passed down.

Nothing deeper than the server and the CLI reads ``os.environ``. Per-project overrides come
from the ML backend's "extra params" in Label Studio (a JSON object whose keys are the
lower-case names of the ``PROJECT_OVERRIDABLE`` settings below).
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class JudgeProvider(StrEnum):
    ANTHROPIC = "anthropic"
    OPENAI_COMPATIBLE = "openai"
    NONE = "none"


class BatchMode(StrEnum):
    AUTO = "auto"
    """Imports of at least ``HYPER_JUDGE_BATCH_MIN`` tasks are judged in Message Batches."""
    ON = "on"
    OFF = "off"


class AIMode(StrEnum):
    ANNOTATE = "annotate"
    """AI-routed tasks get the judge's prediction and an annotation made from it."""
    PREDICT = "predict"
    """AI-routed tasks get a prediction only, for teams that review every task."""


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class JudgeSpec(BaseModel):
    """One judge of ``HYPER_JUDGES``. It names the environment variable holding its key
    (``api_key_env``), never the key itself, so the list can sit in a config file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: Literal["anthropic", "openai"]
    model: str = Field(min_length=1)
    base_url: str | None = None
    """The API's endpoint; required for ``openai`` (e.g. ``http://vllm:8000/v1``)."""
    api_key_env: str | None = None
    """Default: ``ANTHROPIC_API_KEY`` for ``anthropic``; no key for ``openai``."""
    logprobs: bool | None = None
    """``openai`` only: ask for token probabilities (default: ``HYPER_JUDGE_LOGPROBS``)."""

    @field_validator("api_key_env")
    @classmethod
    def _names_a_variable(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            # Never echo the value: it may be a key pasted in the wrong place.
            raise ValueError(
                "must be the name of an environment variable (letters, digits, underscores), "
                "not the key itself"
            )
        return value

    @model_validator(mode="after")
    def _fits_the_provider(self) -> JudgeSpec:
        if self.provider == JudgeProvider.OPENAI_COMPATIBLE and not self.base_url:
            raise ValueError("base_url is required for provider openai")
        if self.provider == JudgeProvider.ANTHROPIC and self.logprobs is not None:
            raise ValueError("logprobs applies to provider openai only")
        return self


def parse_judges(value: Any) -> list[JudgeSpec] | None:
    """``HYPER_JUDGES`` (a JSON list, or already a list) as judge specs, with errors that
    name the entry and the field and never repeat what was given."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"HYPER_JUDGES is not valid JSON: {error.msg} at line {error.lineno} "
                f"column {error.colno}"
            ) from None
    if not isinstance(value, list) or not value:
        raise ValueError('HYPER_JUDGES must be a JSON list of judges: [{"provider": ...}, ...]')
    return [_judge_spec(entry, number, len(value)) for number, entry in enumerate(value, 1)]


def _judge_spec(entry: Any, number: int, count: int) -> JudgeSpec:
    if isinstance(entry, JudgeSpec):
        return entry
    where = f"HYPER_JUDGES entry {number} of {count}"
    if isinstance(entry, dict) and isinstance(entry.get("model"), str):
        where += f" (model {entry['model']!r})"
    try:
        return JudgeSpec.model_validate(entry)
    except ValidationError as error:
        problems = "; ".join(
            ": ".join([*map(str, e["loc"]), e["msg"].removeprefix("Value error, ")])
            for e in error.errors(include_input=False)
        )
        raise ValueError(f"{where}: {problems}") from None


class Settings(BaseSettings):
    """Every knob of the backend; the README's configuration table lists the same."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", hide_input_in_errors=True
    )

    # Label Studio
    label_studio_url: str = "http://localhost:8080"
    label_studio_api_key: SecretStr | None = None
    label_studio_judge_api_key: SecretStr | None = Field(
        default=None,
        description="a token of the Label Studio user the judge's annotations are credited "
        "to; with it they are made in bulk (one call per import, not one per task)",
    )
    label_studio_read_back_export: bool = Field(
        default=True,
        description="read the ids of what a write-back made from Label Studio's export of "
        "the tasks (Label Studio keeps a copy of each export); false: from the Data "
        "Manager's list, about 3x slower",
    )

    # Where state lives
    model_dir: Path = Path("./model_dir")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file in MODEL_DIR"
    )
    redis_url: str | None = Field(
        default=None, description="Redis queue for multi-worker deployments; default: SQLite"
    )

    # Serving
    host: str = "0.0.0.0"
    port: int = 9090
    workers: int = 1
    threads: int = 8
    queue_consumer: Literal["process", "threads"] = Field(
        default="process",
        description="where the queue's THREADS run: a process of their own, started and "
        "restarted by the server, or threads of the server's own process",
    )
    basic_auth_user: str | None = None
    basic_auth_pass: SecretStr | None = None
    log_level: str = "INFO"

    # Routing
    hyper_budget: float = Field(default=0.25, ge=0.0, le=1.0)
    hyper_human_label_cost: float = Field(
        default=0.5, ge=0.0, description="USD per human label, for the cost saved on /status"
    )
    hyper_ai_mode: AIMode = AIMode.ANNOTATE
    hyper_router_model: Path | None = Field(
        default=None, description="A fitted router JSON; default: the shipped prior"
    )
    hyper_audit_share: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="share of judge-bound tasks sent to humans instead, at random, as an audit",
    )
    hyper_target_agreement: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="a quality target: the judge labels only what audits certify agrees with "
        "a single human at least this often (docs/guarantee.md); the budget caps humans",
    )
    hyper_target_confidence: float = Field(
        default=0.9, gt=0.0, lt=1.0, description="the quality target holds with this chance"
    )
    hyper_warmup_audit_share: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="with a quality target, the audit share until a threshold is certified",
    )
    hyper_refit_every: int = Field(
        default=50, ge=1, description="refit the router after this many new human labels"
    )
    hyper_prior_strength: float = Field(
        default=200.0, ge=0.0, description="how many labels the prior is worth in a refit"
    )
    hyper_annotators: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Label Studio Enterprise: who gets human-routed tasks"
    )

    # Judge and tagger
    hyper_judge_provider: JudgeProvider | None = Field(
        default=None, description="default: anthropic when ANTHROPIC_API_KEY is set, else none"
    )
    hyper_judge_model: str | None = None
    hyper_judge_base_url: str | None = None
    hyper_judge_api_key: SecretStr | None = None
    anthropic_api_key: SecretStr | None = None
    hyper_judge_timeout: float = 60.0
    hyper_judge_max_attempts: int = 4
    hyper_judge_concurrency: int = Field(
        default=16,
        ge=1,
        description="LM requests in flight per process, shared by every task, judge and "
        "the tagger; halved on 429/529 and grown back (AIMD)",
    )
    hyper_judge_rate_limit_wait: float = Field(
        default=120.0,
        ge=0.0,
        description="seconds an LM request keeps waiting out 429/529 refusals (their "
        "retry-after honoured) before they count as failed attempts",
    )
    hyper_judge_logprobs: bool = Field(
        default=True, description="ask OpenAI-compatible judges for token probabilities"
    )
    hyper_judges: Annotated[list[JudgeSpec] | None, NoDecode] = Field(
        default=None,
        description="a panel of judges, JSON; default: the one judge of HYPER_JUDGE_*",
    )
    hyper_lm_prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description='extra or overriding LM prices, USD per million tokens: {"model": [in, out]}',
    )
    hyper_judge_batch: BatchMode = Field(
        default=BatchMode.AUTO,
        description="judge imports through Anthropic's Message Batches API, at half the "
        "price, answered within 24 h: auto (imports of at least HYPER_JUDGE_BATCH_MIN "
        "tasks), on (every import), off",
    )
    hyper_judge_batch_min: int = Field(
        default=200, ge=1, description="HYPER_JUDGE_BATCH=auto: the smallest import batched"
    )
    hyper_judge_batch_poll: float = Field(
        default=30.0, gt=0.0, description="seconds between two looks at the batches in flight"
    )
    hyper_tagger: bool = True
    hyper_max_text_chars: int = 40_000

    @field_validator("hyper_judges", mode="before")
    @classmethod
    def _parse_judges(cls, value: Any) -> Any:
        return parse_judges(value)

    @field_validator("hyper_annotators", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @property
    def judge_provider(self) -> JudgeProvider:
        if self.hyper_judge_provider is not None:
            return self.hyper_judge_provider
        return JudgeProvider.ANTHROPIC if self.anthropic_api_key else JudgeProvider.NONE

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.model_dir / 'hyper.sqlite3'}"

    def check_drivers(self) -> None:
        """Raise, naming the extra to install, when ``DATABASE_URL`` or ``REDIS_URL`` needs
        a driver that is not installed (the default install has neither)."""
        from sqlalchemy import make_url

        url = make_url(self.sqlalchemy_url)
        if url.get_backend_name() == "postgresql" and find_spec(url.get_driver_name()) is None:
            raise ValueError(
                f"DATABASE_URL needs the {url.get_driver_name()} driver, which is not "
                "installed: pip install 'hyper-ls-backend[postgres]' (psycopg 3) and write "
                "the URL as postgresql+psycopg://USER:PASS@HOST/DB"
            )
        if self.redis_url and find_spec("redis") is None:
            raise ValueError(
                "REDIS_URL needs the redis package, which is not installed: "
                "pip install 'hyper-ls-backend[redis]'"
            )

    def for_project(self, extra_params: dict[str, Any] | str | None) -> Settings:
        """These settings with a project's overrides applied (unknown keys are an error)."""
        extra_params = parse_extra_params(extra_params)
        if not extra_params:
            return self
        unknown = sorted(set(extra_params) - PROJECT_OVERRIDABLE)
        if unknown:
            raise ValueError(
                f"unknown extra params {unknown}; allowed: {sorted(PROJECT_OVERRIDABLE)}"
            )
        merged = {**self.model_dump(), **extra_params}
        return Settings.model_validate(merged)


def parse_extra_params(extra_params: dict[str, Any] | str | None) -> dict[str, Any]:
    """Label Studio's "extra params" as a dict: it may send an object or a JSON string."""
    if not extra_params:
        return {}
    if isinstance(extra_params, str):
        try:
            extra_params = json.loads(extra_params)
        except json.JSONDecodeError as error:
            raise ValueError(f"extra params are not a JSON object: {error.msg}") from None
    if not isinstance(extra_params, dict):
        raise ValueError("extra params must be a JSON object")
    return extra_params


PROJECT_OVERRIDABLE = frozenset(
    {
        "hyper_budget",
        "hyper_ai_mode",
        "hyper_annotators",
        "hyper_judge_provider",
        "hyper_judge_model",
        "hyper_judge_batch",
        "hyper_judge_batch_min",
        "hyper_tagger",
        "hyper_refit_every",
        "hyper_audit_share",
        "hyper_human_label_cost",
        "hyper_target_agreement",
        "hyper_target_confidence",
        "hyper_warmup_audit_share",
    }
)
