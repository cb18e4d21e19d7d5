"""Any OpenAI-compatible ``/v1/chat/completions`` endpoint as a ``Transport``.

vLLM, Ollama, llama.cpp's server and the OpenAI API all speak this. The answer's schema is
sent as ``response_format`` (``json_schema`` where the server supports structured output,
``json_object`` where it only knows JSON mode, ``none`` where it knows neither) and is also
spelled out in the instructions, so a server that ignores ``response_format`` still gets
asked for JSON.

Token probabilities are asked for when the request has a use for them, as the judge's do
(``logprobs``, with the ``top_logprobs`` most likely alternatives per token; vLLM,
llama.cpp and OpenAI answer them in ``choices[0].logprobs.content``). A server that
ignores the parameter just answers without them; one that rejects it (HTTP 400 naming
logprobs) is asked again without, once, and is never asked for them again by this
transport.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

import requests
from requests.adapters import HTTPAdapter

from hyper_ls_backend.lm.transport import (
    Completion,
    LMError,
    Redactor,
    StructuredRequest,
    Token,
    TransientLMError,
    status_error,
)

log = logging.getLogger(__name__)

TOP_LOGPROBS = 5
"""Alternatives asked for per token: enough to see the other labels where the model chose."""

ResponseFormat = Literal["json_schema", "json_object", "none"]


def build_session(pool_size: int = 16) -> requests.Session:
    """A session whose connection pool fits ``pool_size`` concurrent calls."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class OpenAICompatibleTransport:
    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        temperature: float = 0.0,
        response_format: ResponseFormat = "json_schema",
        logprobs: bool = True,
        session: requests.Session | None = None,
    ) -> None:
        """``base_url`` ends before ``/chat/completions``, e.g. ``http://localhost:8000/v1``.
        ``logprobs=False`` never asks for token probabilities."""
        self.model = model
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._temperature = temperature
        self._response_format = response_format
        self._logprobs = logprobs
        self._session = session or build_session()
        self._redact = Redactor.of([api_key])

    def complete(self, request: StructuredRequest) -> Completion:
        logprobs = self._logprobs and request.token_probabilities
        response = self._post(request, logprobs)
        if logprobs and _rejects_logprobs(response):
            log.info("%s rejects logprobs: asking without them from now on", self.model)
            self._logprobs = False  # a plain bool store: safe across threads
            response = self._post(request, logprobs=False)
        if response.status_code >= 400:
            detail = self._redact(f"HTTP {response.status_code}: {_error_message(response)}")
            raise status_error(response.status_code, detail, response.headers)
        return _completion(response)

    def _post(self, request: StructuredRequest, logprobs: bool) -> requests.Response:
        try:
            return self._session.post(
                self._url,
                json=self._body(request, logprobs),
                headers=self._headers,
                timeout=self._timeout,
            )
        except requests.Timeout as error:
            raise TransientLMError("request timed out") from error
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as error:
            raise TransientLMError(self._redact(f"connection error: {error}")) from error
        except requests.RequestException as error:
            raise LMError(self._redact(f"{type(error).__name__}: {error}")) from error

    def _body(self, request: StructuredRequest, logprobs: bool) -> dict[str, Any]:
        schema = json.dumps(request.schema, ensure_ascii=False)
        system = (
            f"{request.system}\n\nAnswer with a single JSON object, and nothing else, "
            f"matching this JSON schema ({request.schema_description}):\n{schema}"
        )
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": request.user},
            ],
            "temperature": self._temperature,
            "max_tokens": request.max_tokens,
        }
        if logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = TOP_LOGPROBS
        if self._response_format == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "schema": request.schema,
                    "strict": True,
                },
            }
        elif self._response_format == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body


def _completion(response: requests.Response) -> Completion:
    try:
        body = response.json()
        choice = body["choices"][0]
        content = choice["message"].get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
        raise LMError(f"malformed chat completion ({type(error).__name__})") from error
    usage = body.get("usage") or {}
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    return Completion(
        text=content if not isinstance(data, dict) else "",
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        data=data if isinstance(data, dict) else None,
        stop_reason=choice.get("finish_reason"),
        tokens=_tokens(choice.get("logprobs")),
    )


def _tokens(logprobs: Any) -> tuple[Token, ...]:
    """The answer's tokens from ``choice.logprobs``; none when absent or malformed (token
    probabilities are a bonus: a server's odd shape must not fail the call)."""
    try:
        return tuple(
            _token(entry, tuple(_token(top) for top in entry.get("top_logprobs") or ()))
            for entry in logprobs["content"]
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return ()


def _token(entry: dict[str, Any], alternatives: tuple[Token, ...] = ()) -> Token:
    """``bytes`` when the server sent them (exact where a token splits a character), else
    the token's text."""
    raw = entry.get("bytes")
    text = bytes(raw) if raw is not None else entry["token"].encode()
    return Token(text=text, logprob=float(entry["logprob"]), alternatives=alternatives)


def _rejects_logprobs(response: requests.Response) -> bool:
    return response.status_code == 400 and "logprob" in _error_message(response).lower()


def _error_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    error = body.get("error") if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message", error))[:200]
    return str(error)[:200]
