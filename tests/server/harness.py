"""Shared test harness for the server, store and jobs tests (no Label Studio server).

- ``make_settings``: ``Settings`` rooted in a tmp dir, built from arguments only (the
  environment is cleared by the ``clean_env`` fixture), tagger off, no write-back.
- ``ScriptedJudge``: a responder for ``tests/lm/fake_llm_server.py`` that answers each
  judge call according to a ``[judge:PLAN]`` marker in the task's prompt.
- ``FakeLabelStudio``: a tiny HTTP server speaking the few Label Studio endpoints the
  backend's write-back uses, recording every request.
- payload builders for ``/setup``, ``/predict`` and ``/webhook``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi.testclient import TestClient
from lm.fake_llm_server import Recorded, Reply, anthropic_error, anthropic_tool_reply

from hyper_ls_backend.ls import configs
from hyper_ls_backend.server.app import create_app
from hyper_ls_backend.server.model import HyperModel
from hyper_ls_backend.settings import Settings

CONFIG_3WAY = configs.read("preference_3way")
CONFIG_5POINT = configs.read("preference_5point")
JUDGE_KEY = "sk-ant-server-test-SECRET-4242424242"
LS_KEY = "ls-token-SECRET-0123456789abcdef0123456789"
ALPHA, BETA = "ALPHA", "BETA"
PROJECT = 7


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "model_dir": tmp_path / "model_dir",
        "label_studio_api_key": None,
        "anthropic_api_key": None,
        "hyper_judge_api_key": None,
        "hyper_judge_provider": "none",
        "hyper_tagger": False,
        "basic_auth_user": None,
        "basic_auth_pass": None,
        "redis_url": None,
        "database_url": None,
        "threads": 4,
        "queue_consumer": "threads",  # in the test's process: its patches reach the workers
    }
    values.update(overrides)
    return Settings(**values)


def judge_settings(tmp_path: Path, base_url: str, **overrides: Any) -> Settings:
    """Settings whose Anthropic judge is the fake LM server at ``base_url``."""
    values: dict[str, Any] = {
        "hyper_judge_provider": "anthropic",
        "anthropic_api_key": JUDGE_KEY,
        "hyper_judge_base_url": base_url,
        "hyper_judge_timeout": 5.0,
        "hyper_judge_max_attempts": 2,
        "hyper_judge_batch": "off",  # judged call by call unless a test batches
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


@contextmanager
def serve(settings: Settings, *, immediate: bool = True) -> Iterator[tuple[TestClient, HyperModel]]:
    """A started app (lifespan run) over a model built from ``settings``."""
    model = HyperModel.build(settings, immediate=immediate)
    with TestClient(create_app(settings, model)) as client:
        yield client, model


# -- payloads -------------------------------------------------------------------------------


def task(
    task_id: int,
    plan: str | None = None,
    *,
    prompt: str | None = None,
    a: str | None = None,
    b: str | None = None,
    **data: Any,
) -> dict[str, Any]:
    """A Label Studio task for the shipped configs; ``plan`` scripts the judge."""
    marker = f"[judge:{plan}] " if plan else ""
    fields = {
        "prompt": prompt if prompt is not None else f"{marker}task {task_id}: explain recursion.",
        "response_a": a if a is not None else f"{ALPHA}: a function calling itself ({task_id}).",
        "response_b": b if b is not None else f"{BETA}: recursion is recursion ({task_id}).",
        **data,
    }
    return {"id": task_id, "data": fields, "meta": {}, "annotations": [], "predictions": []}


def setup_body(config: str = CONFIG_5POINT, project: int = PROJECT, **extra: Any) -> dict:
    return {
        "project": f"{project}.1700000000",
        "schema": config,
        "hostname": "http://localhost:8080",
        "access_token": "x",
        "model_version": "",
        **extra,
    }


def predict_body(tasks: list[dict], project: int | str = PROJECT) -> dict:
    return {
        "tasks": tasks,
        "project": f"{project}.1700000000" if isinstance(project, int) else project,
        "label_config": CONFIG_5POINT,
        "params": {"login": None, "password": None, "context": None},
    }


def tasks_created(tasks: list[dict], project: int = PROJECT, config: str | None = None) -> dict:
    project_body: dict[str, Any] = {"id": project, "title": "p"}
    if config is not None:
        project_body["label_config"] = config
    return {"action": "TASKS_CREATED", "project": project_body, "tasks": tasks}


def annotation_event(
    action: str,
    annotation_id: int,
    task_id: int,
    choice: str | None,
    *,
    project: int = PROJECT,
    completed_by: Any = 3,
    **annotation: Any,
) -> dict:
    result = (
        [
            {
                "from_name": "preference",
                "to_name": "prompt",
                "type": "choices",
                "value": {"choices": [choice]},
            }
        ]
        if choice is not None
        else []
    )
    body = {
        "id": annotation_id,
        "task": task_id,
        "result": result,
        "completed_by": completed_by,
        "was_cancelled": False,
        "parent_prediction": None,
        **annotation,
    }
    return {
        "action": action,
        "project": {"id": project},
        "task": {"id": task_id},
        "annotation": body,
    }


# -- the scripted judge ---------------------------------------------------------------------

MARKER = re.compile(r"\[judge:(?P<plan>[a-z0-9-]+)\]")
PLANS = {
    "a": ("A-is-clearly-better", "B-is-clearly-better"),
    "b": ("B-is-clearly-better", "A-is-clearly-better"),
    "a-slight": ("A-is-slightly-better", "B-is-slightly-better"),
    "tie": ("Tie", "Tie"),
    # position bias: "the first shown is clearly better" in both orders
    "biased": ("A-is-clearly-better", "A-is-clearly-better"),
}


class ScriptedJudge:
    """Answers per the prompt's ``[judge:PLAN]`` (default ``a``); ``fail`` is HTTP 500."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, request: Recorded) -> Reply:
        text = request.user_text()
        match = MARKER.search(text)
        plan = match["plan"] if match else "a"
        task_key = re.search(r"task \d+", text)
        with self._lock:
            self.calls[task_key.group(0) if task_key else "?"] += 1
        if plan == "fail":
            return anthropic_error(500, "scripted internal error")
        swapped = ALPHA in text and BETA in text and text.index(BETA) < text.index(ALPHA)
        answer = PLANS[plan][1 if swapped else 0]
        reply = anthropic_tool_reply({"rationale": "scripted", "preference": answer})
        if self.delay:
            return Reply(reply.status, reply.body, reply.headers, self.delay)
        return reply


# -- a tiny Label Studio ----------------------------------------------------------------------


class FakeLabelStudio:
    """The Label Studio endpoints the write-back uses, answering with minimal JSON."""

    def __init__(self, user_id: int = 99) -> None:
        self.user_id = user_id
        self.users: list[dict[str, Any]] = [{"id": user_id, "email": "backend@example.com"}]
        """The organisation's users (``GET``/``POST /api/users``)."""
        self.users_refused = False
        """Answer 403 on ``/api/users``, as Enterprise does for a token that is no admin's."""
        self.tasks: dict[int, dict[str, Any]] = {}
        """Each task's data as this Label Studio holds it: what a test put there, then what
        the last PATCH wrote (``GET /api/tasks/ID`` and the task list by id answer it; ``{}``
        for a task never put)."""
        self.deleted_tasks: set[int] = set()
        """Tasks deleted in this Label Studio: writes to them answer as a real one does (404,
        or 400 naming the task for a new prediction)."""
        self.predictions: dict[int, list[dict[str, Any]]] = {}
        """Predictions created, by task (one by one or imported in bulk)."""
        self.annotations: dict[int, list[dict[str, Any]]] = {}
        """Annotations created, by task."""
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.judge_tokens: dict[str, int] = {}
        """API tokens of other users (token: user id): an annotation made by the Data
        Manager action "predictions to annotations" is credited to its caller."""
        self.actions_refused = False
        """Answer 400 to Data Manager actions, as a Label Studio without them would."""
        self.export_refused = False
        """Answer 404 to the export of tasks, as Label Studio Enterprise does."""
        self.actions_failing = 0
        """Answer this many Data Manager action calls 500 (a Label Studio in trouble)."""
        self._ids = iter(range(1000, 10**6))
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeLabelStudio:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def paths(self, method: str | None = None) -> list[str]:
        return [path for m, path, _, _ in self.requests if method in (None, m)]

    def _caller(self, headers: dict[str, str]) -> int:
        token = headers.get("authorization", "").split(" ")[-1]
        return self.judge_tokens.get(token, self.user_id)

    def _answer(
        self, method: str, path: str, body: Any, headers: dict[str, str]
    ) -> tuple[int, Any]:
        route = path.split("?", 1)[0].rstrip("/")
        if route.endswith("/current-user/whoami"):
            return 200, {"id": self._caller(headers), "email": "backend@example.com"}
        if method == "POST" and route == "/api/dm/actions":
            if self.actions_refused:
                return 400, {"detail": "Can't find the action in registered actions"}
            with self._lock:
                if self.actions_failing > 0:
                    self.actions_failing -= 1
                    return 500, {"detail": "fake Label Studio: server error"}
            action = parse_qs(urlsplit(path).query)["id"][0]
            return self._act(action, body, self._caller(headers))
        if route == "/api/users":
            if self.users_refused:
                return 403, {"detail": "You do not have permission to perform this action."}
            if method == "POST":
                with self._lock:
                    self.users.append({"id": next(self._ids), **(body or {})})
                return 201, self.users[-1]
            return 200, self.users
        if method == "GET" and route == "/api/tasks":  # the Data Manager list, by task id
            params = parse_qs(urlsplit(path).query)
            if int(params.get("page", ["1"])[0]) > 1:  # every answer fits on its first page
                return 200, {"tasks": [], "total": 0}
            query = json.loads(params["query"][0])
            if "selectedItems" in query:  # several tasks, with predictions and annotations
                return 200, {"tasks": self._selected(query["selectedItems"]["included"])}
            (rule,) = query["filters"]["items"]
            assert rule["filter"] == "filter:tasks:id" and rule["operator"] == "equal", rule
            task_id = int(rule["value"])
            found = [] if task_id in self.deleted_tasks else [task_id]
            tasks = [{"id": t, "data": self.tasks.get(t, {})} for t in found]
            return 200, {"tasks": tasks, "total": len(tasks)}
        if method == "GET" and re.fullmatch(r"/api/projects/\d+/export", route):
            # the JSON export of the tasks named by ids[] (Label Studio ignores ``ids``),
            # their predictions by id only
            if self.export_refused:
                return 404, {"detail": "Use the asynchronous export API instead"}
            task_ids = [int(t) for t in parse_qs(urlsplit(path).query).get("ids[]", [])]
            assert task_ids, "an export without ids[] is of every task"
            exported = self._selected(task_ids)
            for task in exported:
                task["predictions"] = [p["id"] for p in task["predictions"]]
            return 200, exported
        if method in ("GET", "PATCH") and re.fullmatch(r"/api/tasks/\d+", route):
            task_id = int(route.rsplit("/", 1)[1])
            if task_id in self.deleted_tasks:
                return 404, {"detail": "Not found."}
            if method == "PATCH":
                self.tasks[task_id] = (body or {}).get("data") or {}
            return 200, {"id": task_id, "data": self.tasks.get(task_id, {})}
        if method == "GET" and route in ("/api/predictions", "/api/annotations"):
            return 200, []
        if method == "GET" and re.fullmatch(r"/api/tasks/\d+/annotations", route):
            return 200, []
        if method == "POST" and re.fullmatch(r"/api/projects/\d+/import/predictions", route):
            if any(p["task"] in self.deleted_tasks for p in body):
                return 400, {"detail": "contains invalid task field"}
            with self._lock:
                for prediction in body:
                    created = {"id": next(self._ids), **prediction}
                    self.predictions.setdefault(prediction["task"], []).append(created)
            return 201, {"created": len(body)}
        posted_task = (body or {}).get("task") if route == "/api/predictions" else None
        if method == "POST" and posted_task in self.deleted_tasks:
            return 400, {"validation_errors": {"task": ["Invalid pk - object does not exist."]}}
        annotated = re.fullmatch(r"/api/tasks/(\d+)/annotations", route)
        if method == "POST" and annotated and int(annotated.group(1)) in self.deleted_tasks:
            return 404, {"detail": "No Task matches the given query."}
        if method == "POST" and (
            route == "/api/predictions" or re.fullmatch(r"/api/tasks/\d+/annotations", route)
        ):
            with self._lock:
                created = {"id": next(self._ids), **(body or {})}
                if annotated:
                    self.annotations.setdefault(int(annotated.group(1)), []).append(created)
                else:
                    self.predictions.setdefault(created["task"], []).append(created)
            return 201, created
        return 404, {"detail": f"fake Label Studio: no route for {method} {route}"}

    def _act(self, action: str, body: dict[str, Any], caller: int) -> tuple[int, Any]:
        """The two Data Manager actions the write-back uses, as Label Studio runs them."""
        tasks = [t for t in body["selectedItems"]["included"] if t not in self.deleted_tasks]
        with self._lock:
            if action == "add_data_field":
                cast = float if body["value_type"] == "Number" else str
                for task_id in tasks:
                    self.tasks.setdefault(task_id, {})[body["value_name"]] = cast(body["value"])
                return 200, {"detail": f"Updated {len(tasks)} tasks"}
            assert action == "predictions_to_annotations", action
            made = 0
            for task_id in tasks:
                annotated = {a.get("parent_prediction") for a in self.annotations.get(task_id, [])}
                for prediction in self.predictions.get(task_id, []):
                    if prediction.get("model_version") != body.get("model_version"):
                        continue
                    if prediction["id"] in annotated:
                        continue
                    self.annotations.setdefault(task_id, []).append(
                        {
                            "id": next(self._ids),
                            "result": prediction["result"],
                            "parent_prediction": prediction["id"],
                            "completed_by": caller,
                        }
                    )
                    made += 1
            return 200, {"detail": f"Created {made} annotations"}

    def _selected(self, task_ids: list[int]) -> list[dict[str, Any]]:
        return [
            {
                "id": task_id,
                "data": self.tasks.get(task_id, {}),
                "predictions": self.predictions.get(task_id, []),
                "annotations": self.annotations.get(task_id, []),
            }
            for task_id in task_ids
            if task_id not in self.deleted_tasks
        ]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server._lock:
                    server.requests.append((self.command, self.path, headers, body))
                status, answer = server._answer(self.command, self.path, body, headers)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


# -- waiting --------------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float = 120.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; the deadline only ends a test that would fail anyway,
    so it is generous (a test waiting for 200 tasks routed took 14-19 s in all, on a loaded
    machine, where the deadline was 20 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
