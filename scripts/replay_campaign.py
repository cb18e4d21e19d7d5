"""Replay a labelled dataset as a Label Studio campaign, end to end, and measure it.

Starts a real Label Studio (from ``.venv-ls``), one replay judge per ``--judges`` index
(``hyper_ls_backend/eval/replay_judge.py``: each answers a row's recorded verdict of that
judge, in the order it is shown), and the real backend (``hyper-ls serve``) with those
judges; connects a project, imports the whole file in one import, waits until every task
is routed and written back, and reads what Label Studio holds: the human count against
the budget, judge-error capture (x random), final label accuracy, whether an AI-labelled
task carries an order-inconsistent verdict while humans took consistent ones, and the
capture ``hyper-ls route`` gets offline on the same verdicts. Everything runs on loopback.

    .venv/bin/python scripts/replay_campaign.py ../shared/data/prd_vicuna80_panel.jsonl \\
        --budget 0.25 --judges 0 --out report.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from pydantic import SecretStr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the e2e harness: Label Studio and backend processes

from e2e.backend import BackendProcess  # noqa: E402
from e2e.label_studio import run_label_studio  # noqa: E402
from e2e.replay import (  # noqa: E402
    import_rows,
    judge_env,
    measure,
    offline_routes,
    replayed_view,
    served_view,
    wait_until_written,
)
from label_studio_sdk import LabelStudio  # noqa: E402

from hyper_ls_backend.core.dataset import read_comparisons  # noqa: E402
from hyper_ls_backend.eval.replay_judge import start_replay_judge  # noqa: E402
from hyper_ls_backend.ls import configs  # noqa: E402
from hyper_ls_backend.ls.setup import connect_project  # noqa: E402
from hyper_ls_backend.settings import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="labelled comparisons (HyPER pairs format)")
    parser.add_argument("--budget", type=float, default=0.25)
    parser.add_argument(
        "--judges",
        type=int,
        nargs="+",
        default=[0],
        help="indexes into each row's judges panel to replay, primary first (default: 0)",
    )
    parser.add_argument(
        "--audit-share",
        type=float,
        default=0.0,
        help="HYPER_AUDIT_SHARE (default 0: `hyper-ls route` draws no audits either)",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args()

    started = time.monotonic()
    rows = read_comparisons(args.data)
    view = replayed_view(rows, args.judges)
    seconds: dict[str, float] = {}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="replay-campaign-") as tmp:
        work = Path(tmp)
        servers = [start_replay_judge(rows, judge_index=i) for i in args.judges]
        for server in servers:
            stack.callback(server.stop)
        print(f"replay judges {args.judges} at {[s.base_url for s in servers]}", flush=True)

        mark = time.monotonic()
        label_studio = stack.enter_context(run_label_studio())
        seconds["label_studio_start"] = time.monotonic() - mark
        print(f"Label Studio up at {label_studio.url} ({seconds['label_studio_start']:.0f} s)")

        env = {
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": label_studio.api_key,
            "HYPER_BUDGET": str(args.budget),
            "HYPER_AUDIT_SHARE": str(args.audit_share),
            "HYPER_TAGGER": "false",
            "HYPER_JUDGE_MAX_ATTEMPTS": "2",
            "HYPER_JUDGE_TIMEOUT": "30",
            **judge_env(rows, servers),
        }
        backend = BackendProcess(env, work / "model_dir", work / "backend.log")
        stack.callback(backend.stop)
        try:
            backend.start()
            settings = Settings(
                label_studio_url=label_studio.url,
                label_studio_api_key=SecretStr(label_studio.api_key),
            )
            config = configs.read("preference_5point")
            project_id = connect_project(settings, backend.url, None, "replay", config)
            client = LabelStudio(base_url=label_studio.url, api_key=label_studio.api_key)

            seconds["import"] = import_rows(client, project_id, rows)
            print(f"imported {len(rows)} tasks in one import ({seconds['import']:.1f} s)")
            outcomes, waited = wait_until_written(client, project_id, len(rows), args.timeout)
            seconds.update(waited)
            print(
                f"first task routed after {waited['first_routed']:.0f} s, all routed and "
                f"written back after {waited['all_routed']:.0f} s"
            )
            _, status = backend.request("GET", f"/status?project={project_id}")
        except BaseException:
            print(f"--- backend log ---\n{backend.logs()}", file=sys.stderr)
            raise
        mark = time.monotonic()
        offline = offline_routes(view, args.budget, work, "replayed")
        seconds["offline_route"] = time.monotonic() - mark
        served = offline_routes(served_view(rows, args.judges), args.budget, work, "served")
        seconds["total"] = time.monotonic() - started
        report = measure(view, outcomes, offline, served, args.budget, seconds)
        replies = {str(s.judge.judge_index): dict(s.judge.counts) for s in servers}

    result = {
        "data": str(args.data),
        "judges": args.judges,
        "audit_share": args.audit_share,
        **report.as_json(),
        "replay_judge_requests": replies,
        "status": status,
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"\n{report.n} tasks, budget {report.budget}: {report.human} human-routed "
        f"(floor(budget x N) = {report.budget_floor})\n"
        f"judge errors {report.judge_errors}; capture x random: "
        f"{report.capture_in_label_studio:.3f} in Label Studio, "
        f"{report.capture_offline_route:.3f} by `hyper-ls route` on the file "
        f"({report.offline_human} human), {report.capture_offline_served:.3f} on the verdicts "
        "the backend made of the replayed answers\n"
        f"final label accuracy {report.final_label_accuracy:.3f} "
        f"(offline route {report.final_label_accuracy_offline:.3f}); AI pre-fills equal to the "
        f"replayed judge label: {report.ai_prefill_agrees_with_view:.3f}\n"
        f"order-inconsistent verdicts: {report.inconsistent_total}, AI-labelled "
        f"{report.inconsistent_ai}; consistent ones human-routed {report.consistent_human} "
        f"-> violation: {report.inconsistent_ai_while_humans_took_consistent}\n"
        f"times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
    )


if __name__ == "__main__":
    main()
