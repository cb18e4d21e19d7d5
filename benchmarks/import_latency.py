"""Import benchmark: webhook acknowledge latency, and time from import to all-routed.

    python benchmarks/import_latency.py [--tasks 1000] [--judge-ms 300] [--concurrent 50]
        [--concurrency C] [--storm-s 30] [--judge-token] [--queue-consumer threads]
        [--keep DIR]

Runs the real backend (``hyper-ls serve``, SQLite state and queue) as a subprocess with the
judge pointed at a local fake Anthropic Messages API that answers after ``--judge-ms``
(the test suite's scripted judge, ``tests/e2e/backend.py``), then:

1. webhook latency: ``--concurrent`` clients each POST one ``TASKS_CREATED`` of 20 tasks to
   ``/webhook`` at the same moment, once the backend's queue consumer runs (its own
   process, or with ``--queue-consumer threads`` threads of the server's); reports
   p50/p99/max of the acknowledgements;
2. import to all-routed: starts a real Label Studio 1.23.2 (``make label-studio``), connects
   the backend with ``hyper-ls connect``'s code once its queue consumer runs (as in a
   backend in service; how long that took after ``/health`` answered is reported as
   ``consumer_start_s``), imports ``--tasks`` tasks through the SDK,
   and times until every task is routed and until every decision is written back, against
   the judge-bound time (tasks x 2 orders x judge time / ``--concurrency``, the backend's
   ``HYPER_JUDGE_CONCURRENCY``). The judge's side says where the rest went: when its first
   and last calls came (``first_call_s``, ``last_call_s``) and how busy its slots were
   between (``slots_busy``, 1.0 being what the bound assumes). ``cpu_s`` says who spent the
   machine's CPU until all was written back (``CpuAccount``), and ``cores_judging_first_half``
   and ``..._second_half`` how many cores each kept busy in the two halves of the time
   between the judge's first and last calls.

``--judge-token``: the judge gets a Label Studio user of its own with a token
(``LABEL_STUDIO_JUDGE_API_KEY``), so its annotations are made in bulk; without it they are
made one by one, credited to the judge's user by ``completed_by``.

``--storm-s S``: for the first S seconds of the import the judge refuses every other call
with HTTP 429 (``retry-after: 1``); the report counts the refusals, the tasks whose judge
failed (there must be none) and the most attempts any call made. The load average
(``/proc/loadavg``) before and after each part is reported with it: other work on the
machine slows Label Studio and the backend alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's fakes and harnesses

from e2e.backend import BackendProcess, ScriptedJudge, comparison_data  # noqa: E402
from e2e.label_studio import run_label_studio  # noqa: E402
from label_studio_sdk import LabelStudio  # noqa: E402
from lm.fake_llm_server import FakeLLMServer, Recorded, Reply, anthropic_error  # noqa: E402

from hyper_ls_backend.ls import configs  # noqa: E402
from hyper_ls_backend.ls.setup import connect_project  # noqa: E402
from hyper_ls_backend.settings import Settings  # noqa: E402

CONFIG = configs.read("preference_5point")
TASKS_PER_WEBHOOK = 20
STORM_RETRY_AFTER = "1"
CONSUMING = "consuming"
"""What the backend logs once its queue consumer process runs."""
LS_START_TIMEOUT = 600.0
"""Label Studio starts in about 30 s on an idle machine, minutes on a loaded one."""


class Storm:
    """The scripted judge, but refusing every other call with 429 while the storm lasts
    (from ``start()`` for ``seconds``)."""

    def __init__(self, judge: ScriptedJudge, seconds: float) -> None:
        self.judge, self.seconds = judge, seconds
        self.refused = 0
        self._calls = 0
        self._until = 0.0
        self._lock = threading.Lock()

    def start(self) -> None:
        self._until = time.monotonic() + self.seconds

    def __call__(self, request: Recorded) -> Reply:
        with self._lock:
            self._calls += 1
            refuse = time.monotonic() < self._until and self._calls % 2 == 0
            self.refused += refuse
        if refuse:
            return anthropic_error(429, "storm", retry_after=STORM_RETRY_AFTER)
        return self.judge(request)


class CallTimes:
    """A responder that notes when each call came in, then answers as ``responder`` does."""

    def __init__(self, responder: Callable[[Recorded], Reply]) -> None:
        self.responder = responder
        self.times: list[float] = []

    def __call__(self, request: Recorded) -> Reply:
        self.times.append(time.perf_counter())
        return self.responder(request)

    def timeline(self, since: float, judge_s: float, slots: int) -> dict[str, float]:
        """When the first and the last call of the import came (seconds after ``since``),
        and how busy the judge's slots were between: 1.0 is every slot answering all the
        time, what the judge-bound time assumes."""
        times = [t - since for t in self.times if t >= since]
        span = times[-1] + judge_s - times[0]
        return {
            "judge_calls": len(times),
            "first_call_s": round(times[0], 1),
            "last_call_s": round(times[-1], 1),
            "slots_busy": round(len(times) * judge_s / (slots * span), 2),
        }


class CpuAccount:
    """CPU seconds spent since ``start()`` (``spent()``), by whom: the backend's server and
    its queue consumer (the processes of its session: the server, and the others), this
    process (the fake judge and the polling), and the rest of the machine (Label Studio,
    and anything else running). On 2 cores, what each one spends bounds the import: the
    consumer, one Python process, cannot use more than about one core."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, backend: BackendProcess) -> None:
        self.backend = backend
        self._start: dict[str, float] = {}
        self._samples: list[tuple[float, dict[str, float]]] = []
        """(``time.perf_counter()``, ``_read()``) at each ``sample()``."""

    def start(self) -> None:
        self._start = self._read()

    def sample(self) -> None:
        self._samples.append((time.perf_counter(), self._read()))

    def spent(self) -> dict[str, float]:
        now = self._read()
        spent = self._by_whom({who: now[who] - self._start.get(who, 0.0) for who in now})
        return {who: round(s, 1) for who, s in spent.items()}

    def cores(self, since: float, start_s: float, end_s: float) -> dict[str, float]:
        """The cores each kept busy between the samples nearest ``start_s`` and ``end_s``
        seconds after ``since``."""

        def nearest(at: float) -> tuple[float, dict[str, float]]:
            return min(self._samples, key=lambda sample: abs(sample[0] - since - at))

        (t0, cpu0), (t1, cpu1) = nearest(start_s), nearest(end_s)
        if t1 <= t0:
            return {}
        spent = self._by_whom({who: cpu1[who] - cpu0[who] for who in cpu1})
        return {who: round(s / (t1 - t0), 2) for who, s in spent.items()}

    @staticmethod
    def _by_whom(spent: dict[str, float]) -> dict[str, float]:
        rest = spent.pop("machine") - sum(spent.values())
        return {**spent, "label_studio_and_rest": rest}

    def _read(self) -> dict[str, float]:
        server = self.backend.process.pid
        own = os.times()
        seconds = {
            "backend_server": 0.0,
            "queue_consumer": 0.0,
            "judge_and_benchmark": own.user + own.system,
        }
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            if int(fields[2]) == server:  # its process group: the backend's session
                who = "backend_server" if int(entry.name) == server else "queue_consumer"
                seconds[who] += (int(fields[11]) + int(fields[12])) / self.TICK
        cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        busy = sum(int(v) for i, v in enumerate(cpu[:8]) if i not in (3, 4))  # not idle, iowait
        return {**seconds, "machine": busy / self.TICK}


def load() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def backend_env(judge_url: str, concurrency: int | None, consumer: str) -> dict[str, str]:
    env = {
        "QUEUE_CONSUMER": consumer,
        "ANTHROPIC_API_KEY": "sk-ant-bench",
        "HYPER_JUDGE_BASE_URL": judge_url,
        "HYPER_TAGGER": "false",
        "HYPER_JUDGE_BATCH": "off",  # call by call: the Message Batches path is not timed here
    }
    if concurrency is not None:
        env["HYPER_JUDGE_CONCURRENCY"] = str(concurrency)
    return env


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def decisions(backend: BackendProcess) -> tuple[int, int]:
    """(decided, written back) counted from the backend's own database."""
    ((decided, written),) = backend.query("select count(*), count(written_at) from decisions")
    return decided, written


def webhook_latency(
    judge_url: str, concurrent: int, concurrency: int | None, consumer: str, work: Path
) -> dict[str, float]:
    env = backend_env(judge_url, concurrency, consumer)
    backend = BackendProcess(env, work / "webhook-model", work / "webhook.log").start()
    if consumer == "process":
        wait_for_consumer(work / "webhook.log")
    before = load()
    try:
        setup = {"project": "1.0", "schema": CONFIG}
        assert backend.request("POST", "/setup", setup)[0] == 200
        latencies = webhooks_at_once(
            lambda event: backend.request("POST", "/webhook", event)[0], concurrent
        )
    finally:
        backend.stop()
    return {
        "load_before": before,
        "load_after": load(),
        "queue_consumer": consumer,
        "webhooks": concurrent,
        "tasks_per_webhook": TASKS_PER_WEBHOOK,
        **latency_summary(latencies),
    }


def webhooks_at_once(post: Callable[[dict[str, Any]], int], concurrent: int) -> list[float]:
    """``concurrent`` threads each ``post`` one ``TASKS_CREATED`` of 20 tasks at the same
    moment (``post`` returns the HTTP status); returns each one's seconds to its answer."""
    barrier = threading.Barrier(concurrent)
    latencies: list[float] = []

    def send(client: int) -> None:
        tasks = [
            {"id": client * TASKS_PER_WEBHOOK + i, "data": comparison_data(f"w{client}-{i}")}
            for i in range(TASKS_PER_WEBHOOK)
        ]
        event = {"action": "TASKS_CREATED", "project": {"id": 1}, "tasks": tasks}
        barrier.wait()
        started = time.perf_counter()
        status = post(event)
        latencies.append(time.perf_counter() - started)
        assert status == 200, status

    threads = [threading.Thread(target=send, args=(c,)) for c in range(concurrent)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def latency_summary(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        "max_ms": round(1000 * max(latencies), 1),
    }


def wait_for_consumer(log: Path, timeout: float = 120.0) -> None:
    """Until the backend's queue consumer process runs (it starts after ``/health``
    answers, and its start-up would take the CPU from the webhooks timed)."""
    deadline = time.monotonic() + timeout
    while CONSUMING not in log.read_text():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no queue consumer after {timeout:.0f} s")
        time.sleep(0.2)


def judge_failures(backend: BackendProcess) -> tuple[int, int]:
    """(tasks whose judge output records an error, the most attempts of any one call)."""
    failed, most = 0, 0
    for error, calls in backend.query("select error, calls from judge_outputs"):
        failed += error is not None
        most = max([most, *(call["attempts"] for call in json.loads(calls))])
    return failed, most


def import_to_routed(
    judge_url: str,
    n_tasks: int,
    concurrency: int | None,
    judge_s: float,
    storm: Storm | None,
    calls: CallTimes,
    work: Path,
    judge_token: bool,
    consumer: str,
) -> dict[str, float]:
    slots = concurrency or Settings().hyper_judge_concurrency
    with run_label_studio(timeout=LS_START_TIMEOUT) as ls:
        env = {
            **backend_env(judge_url, concurrency, consumer),
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": ls.api_key,
        }
        if judge_token:  # the judge's own Label Studio user: annotations made in bulk
            env["LABEL_STUDIO_JUDGE_API_KEY"] = ls.create_user("judge@example.com")
        backend = BackendProcess(env, work / "import-model", work / "import.log").start()
        try:
            ready = time.perf_counter()
            if consumer == "process":  # a backend in service has its consumer running
                wait_for_consumer(work / "import.log")
            consumer_start = time.perf_counter() - ready
            settings = Settings(label_studio_url=ls.url, label_studio_api_key=ls.api_key)
            project = connect_project(settings, backend.url, None, "benchmark", CONFIG)
            client = LabelStudio(base_url=ls.url, api_key=ls.api_key, timeout=120)
            data = [{"data": comparison_data(f"t{i}")} for i in range(n_tasks)]
            before = load()
            cpu = CpuAccount(backend)
            cpu.start()
            started = time.perf_counter()
            if storm is not None:
                storm.start()
            client.projects.import_tasks(id=project, request=data)
            imported = time.perf_counter() - started
            routed_at = written_at = None
            while written_at is None:
                decided, written = decisions(backend)
                cpu.sample()
                now = time.perf_counter() - started
                if routed_at is None and decided >= n_tasks:
                    routed_at = now
                if written >= n_tasks:
                    written_at = now
                    spent = cpu.spent()
                time.sleep(0.5)
            failed, most_attempts = judge_failures(backend)
        finally:
            backend.stop()
    # the backend logs each bulk write-back: how long its parts took
    write_backs = [
        line.split("wrote back ", 1)[1]
        for line in (work / "import.log").read_text().splitlines()
        if "wrote back " in line
    ]
    bound = n_tasks * 2 * judge_s / slots
    judging = calls.timeline(started, judge_s, slots)
    first = judging["first_call_s"]
    middle = (first + judging["last_call_s"]) / 2
    report = {
        "tasks": n_tasks,
        "concurrency": slots,
        "judge_token": judge_token,
        "queue_consumer": consumer,
        "load_before": before,
        "load_after": load(),
        "consumer_start_s": round(consumer_start, 1),
        "judge_bound_s": round(bound, 1),
        "import_call_s": round(imported, 1),
        "all_routed_s": round(routed_at, 1),
        "all_written_back_s": round(written_at, 1),
        "routed_vs_bound": round(routed_at / bound, 2),
        "written_vs_bound": round(written_at / bound, 2),
        "routed_per_s": round(n_tasks / routed_at, 1),
        **judging,
        "judge_failed_tasks": failed,
        "most_attempts_per_call": most_attempts,
        "cpu_s": spent,
        "cores_judging_first_half": cpu.cores(started, first, middle),
        "cores_judging_second_half": cpu.cores(started, middle, judging["last_call_s"]),
        "write_backs": write_backs,
    }
    if storm is not None:
        report |= {"storm_s": storm.seconds, "storm_refusals": storm.refused}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--judge-ms", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument(
        "--concurrency", type=int, help="HYPER_JUDGE_CONCURRENCY (default: the setting's)"
    )
    parser.add_argument(
        "--storm-s", type=float, default=0.0, help="429 for every other call this long"
    )
    parser.add_argument(
        "--judge-token",
        action="store_true",
        help="give the judge a Label Studio user and token (LABEL_STUDIO_JUDGE_API_KEY)",
    )
    parser.add_argument(
        "--queue-consumer",
        choices=["process", "threads"],
        default="process",
        help="the backend's QUEUE_CONSUMER",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="work in DIR and keep it: the backends' logs (webhook.log, import.log: each "
        "settle and write-back, timestamped) and databases",
    )
    parser.add_argument("--skip-import", action="store_true", help="webhook latency only")
    parser.add_argument("--skip-webhook", action="store_true", help="import only")
    args = parser.parse_args()
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep}: not empty (a backend would start on old state)")
    judge = ScriptedJudge(slow_s=30.0)
    judge.delay_s = args.judge_ms / 1000
    storm = Storm(judge, args.storm_s) if args.storm_s > 0 else None
    calls = CallTimes(storm or judge)
    server = FakeLLMServer()
    server.responder = calls
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = args.keep or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            report: dict[str, object] = {
                "benchmark": "import_latency",
                "judge_ms": args.judge_ms,
                "threads": int(os.environ.get("THREADS", Settings().threads)),
            }
            if not args.skip_webhook:
                report["webhook"] = webhook_latency(
                    server.base_url, args.concurrent, args.concurrency, args.queue_consumer, work
                )
                print(json.dumps(report["webhook"]), file=sys.stderr, flush=True)
            if not args.skip_import:
                report["import"] = import_to_routed(
                    server.base_url,
                    args.tasks,
                    args.concurrency,
                    judge.delay_s,
                    storm,
                    calls,
                    work,
                    args.judge_token,
                    args.queue_consumer,
                )
    finally:
        server.stop()
    report |= {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
