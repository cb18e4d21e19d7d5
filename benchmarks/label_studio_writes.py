"""What Label Studio's write calls cost: the ways a write-back can reach a real server.

    python benchmarks/label_studio_writes.py [--tasks 100] [--threads 8] [--webhook all]

Starts a real Label Studio 1.23.2 (``make label-studio``) and a project with the shipped
5-point preference config whose webhook points at a local receiver that acknowledges at
once, so what is measured is Label Studio's own work. ``--webhook``: ``all`` (the default)
for every action, as Label Studio creates it for a connected backend; ``backend`` narrowed
to the events the backend acts on, as ``hyper-ls connect`` leaves it
(``configure_webhook``); ``none``, no webhook. (Label Studio without Redis calls webhooks
inside the request that caused them.) Then, each on ``--tasks`` fresh tasks, times:

- one call per task, from ``--threads`` threads: ``predictions.create``,
  ``annotations.create`` (from the prediction), ``tasks.update`` of the task's data;
- bulk, one call for all the tasks: ``import_predictions``, the Data Manager actions
  "predictions to annotations" (``predictions_to_annotations``) and "add or modify data
  field" (``add_data_field``);
- reading back what the bulk calls made (the ids a write-back records), one call for all
  the tasks: the Data Manager's list (``tasks.list`` with ``fields=all``) and the JSON
  export of the tasks (``ids[]``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's harnesses

from e2e.backend import comparison_data  # noqa: E402
from e2e.label_studio import run_label_studio  # noqa: E402
from label_studio_sdk import LabelStudio  # noqa: E402

from hyper_ls_backend.core.comparison import Label  # noqa: E402
from hyper_ls_backend.ls import configs  # noqa: E402
from hyper_ls_backend.ls.label_config import parse_label_config, prediction_result  # noqa: E402
from hyper_ls_backend.ls.setup import configure_webhook  # noqa: E402

CONFIG = configs.read("preference_5point")
LS_START_TIMEOUT = 600.0
MODEL_VERSION = "benchmark"


class _Acknowledge(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).received += 1
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def timed(label: str, n_tasks: int, run: Callable[[], object]) -> dict[str, object]:
    before = load()
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    row = {
        "write": label,
        "tasks": n_tasks,
        "seconds": round(seconds, 2),
        "tasks_per_s": round(n_tasks / seconds, 1),
        "load": f"{before} -> {load()}",
    }
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def each(threads: int, ids: Sequence[int], call: Callable[[int], object]) -> Callable[[], None]:
    def run() -> None:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(call, ids))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--webhook", choices=["all", "backend", "none"], default="all")
    args = parser.parse_args()
    n = args.tasks
    result = prediction_result(parse_label_config(CONFIG), Label.A)
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Acknowledge)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    with run_label_studio(timeout=LS_START_TIMEOUT) as ls:
        client = LabelStudio(base_url=ls.url, api_key=ls.api_key, timeout=300)
        project = client.projects.create(title="writes", label_config=CONFIG).id
        receiver_url = f"http://127.0.0.1:{receiver.server_port}"
        if args.webhook != "none":
            client.webhooks.create(
                project=project,
                url=f"{receiver_url}/webhook",
                send_for_all_actions=True,
                send_payload=True,
            )
        if args.webhook == "backend":
            configure_webhook(client, project, receiver_url, None)
        client.projects.import_tasks(
            id=project, request=[{"data": comparison_data(f"t{i}")} for i in range(6 * n)]
        )
        ids = sorted(task.id for task in client.tasks.list(project=project, fields="all"))
        per_task, bulk = ids[: 3 * n], ids[3 * n :]

        def predict(task_id: int) -> int:
            return client.predictions.create(
                task=task_id, result=result, score=0.9, model_version=MODEL_VERSION
            ).id

        predicted: dict[int, int] = {}
        rows = [
            timed(
                "predictions.create, one per task",
                n,
                each(args.threads, per_task[:n], lambda t: predicted.__setitem__(t, predict(t))),
            ),
            timed(
                "annotations.create, one per task",
                n,
                each(
                    args.threads,
                    per_task[:n],
                    lambda t: client.annotations.create(
                        id=t, result=result, parent_prediction=predicted[t], ground_truth=False
                    ),
                ),
            ),
            timed(
                "tasks.update of data, one per task",
                n,
                each(
                    args.threads,
                    per_task[n : 2 * n],
                    lambda t: client.tasks.update(
                        id=str(t), data={**comparison_data(f"t{t}"), "hyper_route": "human"}
                    ),
                ),
            ),
        ]
        selected = {"all": False, "included": bulk[:n]}
        rows += [
            timed(
                "import_predictions, one call",
                n,
                lambda: client.projects.import_predictions(
                    id=project,
                    request=[
                        {"task": t, "result": result, "score": 0.9, "model_version": MODEL_VERSION}
                        for t in bulk[:n]
                    ],
                ),
            ),
            timed(
                "predictions_to_annotations, one call",
                n,
                lambda: client.actions.create(
                    id="predictions_to_annotations",
                    project=project,
                    selected_items=selected,
                    request_options={
                        "additional_body_parameters": {"model_version": MODEL_VERSION}
                    },
                ),
            ),
            timed(
                "add_data_field, one call",
                n,
                lambda: client.actions.create(
                    id="add_data_field",
                    project=project,
                    selected_items={"all": False, "included": bulk[n : 2 * n]},
                    request_options={
                        "additional_body_parameters": {
                            "value_name": "hyper_route",
                            "value_type": "String",
                            "value": "human",
                        }
                    },
                ),
            ),
        ]
        read = bulk[:n]
        rows += [
            timed(
                "read back: Data Manager list (fields=all), one call",
                n,
                lambda: (
                    client.tasks.list(
                        project=project,
                        fields="all",
                        query=json.dumps({"selectedItems": {"all": False, "included": read}}),
                        resolve_uri=False,
                        page_size=n,
                    ).items
                ),
            ),
            timed(
                "read back: JSON export (ids[]), one call",
                n,
                lambda: json.loads(
                    b"".join(
                        client.projects.exports.download_sync(
                            project,
                            export_type="JSON",
                            download_all_tasks=True,
                            download_resources=False,
                            request_options={"additional_query_parameters": {"ids[]": read}},
                        )
                    )
                ),
            ),
        ]
    receiver.shutdown()
    print(
        json.dumps(
            {
                "benchmark": "label_studio_writes",
                "webhook": args.webhook,
                "webhooks_received": _Acknowledge.received,
                "threads": args.threads,
                "machine": platform.machine(),
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
