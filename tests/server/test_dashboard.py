"""GET /dashboard: the campaign page renders in a real browser and shows the database's numbers.

The browser test serves the app on a loopback port (uvicorn in a thread), fills the
database through the webhook flow, and has headless Chromium load the page through basic
auth. Every ``data-metric`` element's text must be its JSON Pointer's value in ``/status``,
and the headline numbers must be what the test's own campaign implies.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn
from lm.fake_llm_server import FakeLLMServer
from PIL import Image
from processes import unavailable

from hyper_ls_backend.cli import main
from hyper_ls_backend.server.app import create_app
from hyper_ls_backend.server.dashboard import render
from hyper_ls_backend.server.model import HyperModel
from hyper_ls_backend.server.status import (
    Agreement,
    Budget,
    CurvePoint,
    LastTraining,
    OverBudget,
    ProjectStatus,
    QualityTarget,
    RouterVersionStatus,
    Routes,
    Training,
    agreement,
    ai_label_accuracy,
)
from hyper_ls_backend.settings import Settings

from .harness import (
    PROJECT,
    ScriptedJudge,
    annotation_event,
    judge_settings,
    make_settings,
    serve,
    setup_body,
    task,
    tasks_created,
    wait_until,
)

CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "dash", "s3cret pass"
CATEGORIES = ("math", "coding", "writing")


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium (``scripts/install_test_services.sh``): skipped locally, fails in CI."""
    path = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if path is None:
        unavailable("chromium not found (install it with scripts/install_test_services.sh)")
    return path


@contextmanager
def serve_on_loopback(settings: Settings) -> Iterator[tuple[str, HyperModel]]:
    """The app on a free 127.0.0.1 port, as a browser reaches it; yields (base URL, model)."""
    model = HyperModel.build(settings, immediate=True)
    config = uvicorn.Config(
        create_app(settings, model), host="127.0.0.1", port=0, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), what="uvicorn to start")
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}", model
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def browse(chromium: str, url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        f"--user-data-dir={profile}",
        *extra,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


class MetricReader(HTMLParser):
    """Collects ``data-metric`` elements' text (the elements hold text only), in page
    order (a number may be shown twice), and counts inline SVG plots."""

    def __init__(self) -> None:
        super().__init__()
        self.shown: list[list[str]] = []
        self.svgs = 0
        self._open = False

    @property
    def metrics(self) -> dict[str, str]:
        return {pointer: text for pointer, text in self.shown}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.svgs += tag == "svg"
        pointer = dict(attrs).get("data-metric")
        if pointer is not None:
            self.shown.append([pointer, ""])
        self._open = pointer is not None

    def handle_endtag(self, tag: str) -> None:
        self._open = False

    def handle_data(self, data: str) -> None:
        if self._open:
            self.shown[-1][1] += data


def resolve(document: Any, pointer: str) -> Any:
    """The value at an RFC 6901 JSON Pointer (``None`` past a ``None``)."""
    for token in pointer.split("/")[1:]:
        if document is None:
            return None
        key = token.replace("~1", "/").replace("~0", "~")
        document = document[int(key)] if isinstance(document, list) else document[key]
    return document


def shows(text: str, value: Any) -> bool:
    """Whether ``text`` is ``value`` as the page formats it: a number to the precision
    shown (``$``, ``,`` and ``%`` understood), ``yes``/``no``, or the string itself."""
    if value is None:
        return re.search(r"\d", text) is None
    if isinstance(value, bool):
        return text == ("yes" if value else "no")
    if isinstance(value, str):
        return text == value or text == minute(value)
    number = text.replace("$", "").replace(",", "")
    scale = 1.0
    if number.endswith("%"):
        number, scale = number[:-1], 100.0
    decimals = len(number.partition(".")[2])
    return abs(float(number) - value * scale) <= 0.5 * 10**-decimals + 1e-9


def minute(value: str) -> str | None:
    """An ISO timestamp as the page shows it (to the minute), or None for other text."""
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M %Z").strip()
    except ValueError:
        return None


def labels_for(tasks: list[int]) -> dict[int, str]:
    """Human answers: every third human-routed task disagrees with the judge (which says A)."""
    return {
        t: "B-is-clearly-better" if n % 3 == 0 else "A-is-clearly-better"
        for n, t in enumerate(tasks)
    }


# -- the browser test -------------------------------------------------------------------------


def test_dashboard_renders_in_chromium_with_the_numbers_of_the_database(
    tmp_path: Path, llm: FakeLLMServer, judge: ScriptedJudge, chromium: str
) -> None:
    settings = judge_settings(
        tmp_path,
        llm.base_url,
        hyper_budget=0.4,
        hyper_audit_share=0.5,
        hyper_human_label_cost=1.25,
        basic_auth_user=USER,
        basic_auth_pass=PASSWORD,
    )
    ids = range(1, 31)
    tags = {
        i: {"category": CATEGORIES[i % 3], "safety_concern": "high" if i % 4 else "safe"}
        for i in ids
    }
    with serve_on_loopback(settings) as (url, model):
        backend = requests.Session()
        backend.auth = (USER, PASSWORD)
        backend.post(f"{url}/setup", json=setup_body()).raise_for_status()
        imported = [task(i, "a", tags=tags[i]) for i in ids]
        backend.post(f"{url}/webhook", json=tasks_created(imported)).raise_for_status()
        decisions = {i: model.store.decision(PROJECT, i) for i in ids}
        humans = [i for i in ids if decisions[i].route == "human"]
        answers = labels_for(humans)
        for task_id, choice in answers.items():
            event = annotation_event("ANNOTATION_CREATED", 500 + task_id, task_id, choice)
            backend.post(f"{url}/webhook", json=event).raise_for_status()
        refit = {"action": "START_TRAINING", "project": {"id": PROJECT}}
        backend.post(f"{url}/webhook", json=refit).raise_for_status()
        status = backend.get(f"{url}/status", params={"project": PROJECT}).json()

        page = f"http://{USER}:{PASSWORD.replace(' ', '%20')}@{url.removeprefix('http://')}"
        page += f"/dashboard?project={PROJECT}"
        dom = browse(chromium, page, tmp_path / "profile", "--dump-dom").stdout
        screenshot = tmp_path / "dashboard.png"
        browse(
            chromium,
            page,
            tmp_path / "profile",
            f"--screenshot={screenshot}",
            "--window-size=1280,2000",
        )
        spend = model.store.lm_spend(PROJECT)

    reader = MetricReader()
    reader.feed(dom)
    shown = reader.metrics

    # The campaign as the test made it (not as /status computes it).
    audits = [i for i in humans if decisions[i].audit]
    ai = [i for i in ids if decisions[i].route == "ai"]
    agreeing = [i for i in humans if answers[i] == "A-is-clearly-better"]
    assert audits and ai and len(humans) == 12, "the campaign should have audits and AI labels"
    expected = {
        "/budget/allowed": 12,
        "/budget/used": len(humans),
        "/budget/left": 0,
        "/routes/received": 30,
        "/routes/ai": len(ai),
        "/routes/audit": len(audits),
        "/routes/human": len(humans) - len(audits),
        "/routes/forced": 0,
        "/judge_agreement/n": len(humans),
        "/judge_agreement/agree": len(agreeing),
        "/judge_agreement/rate": len(agreeing) / len(humans),
        "/ai_label_accuracy/ai_labelled": len(ai),
        "/ai_label_accuracy/audits/n": len(audits),
        "/ai_label_accuracy/audits/agree": len(set(audits) & set(agreeing)),
        "/ai_label_accuracy/audits/rate": len(set(audits) & set(agreeing)) / len(audits),
        "/spend/cost_usd": spend["cost_usd"],
        "/spend/input_tokens": spend["input_tokens"],
        "/spend/human_label_usd": 1.25,
        "/spend/human_cost_saved_usd": len(ai) * 1.25,
    }
    assert set(status["agreement_by_tag"]["category"]) == {tags[i]["category"] for i in humans}
    for value in {tags[i]["category"] for i in humans}:
        in_category = [i for i in humans if tags[i]["category"] == value]
        expected[f"/agreement_by_tag/category/{value}/n"] = len(in_category)
        expected[f"/agreement_by_tag/category/{value}/agree"] = len(
            set(in_category) & set(agreeing)
        )
    for pointer, value in expected.items():
        assert pointer in shown, f"the page does not show {pointer}"
        assert shows(shown[pointer], value), f"{pointer}: page {shown[pointer]!r}, expected {value}"

    # Everything else the page shows is what /status says, and /status's key numbers are there.
    for pointer, text in reader.shown:
        assert shows(text, resolve(status, pointer)), f"{pointer}: page {text!r} vs /status"
    for low_high in ("/judge_agreement/ci95", "/ai_label_accuracy/audits/ci95"):
        assert {f"{low_high}/0", f"{low_high}/1"} <= set(shown)
    assert "/agreement_by_tag/safety_concern/high/n" in shown
    for i in range(len(status["router_versions"])):
        keys = ("version", "created_at", "in_use", "summary")
        assert {f"/router_versions/{i}/{key}" for key in keys} <= set(shown)
    assert status["training"]["last"] is not None  # Start training ran: the page says what
    assert {"/training/last/summary", "/training/last/at"} <= set(shown)
    assert {f"/warnings/{i}/message" for i in range(len(status["warnings"]))} <= set(shown)
    assert [shown[f"/top_features/{i}/feature"] for i in range(len(status["top_features"]))] == [
        f["feature"] for f in status["top_features"]
    ]
    # budget+routes, agreement overall, one for all tag values, spend, feature weights (the
    # refit's versions plot only when it measured a number)
    assert reader.svgs >= 5

    image = Image.open(screenshot)
    assert image.size == (1280, 2000)
    colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is (nearly) one colour"


# -- without a browser --------------------------------------------------------------------------


def test_dashboard_answers_404_for_an_unknown_project_and_401_without_credentials(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, basic_auth_user=USER, basic_auth_pass=PASSWORD)
    with serve(settings) as (client, _):
        client.post("/setup", json=setup_body(), auth=(USER, PASSWORD))
        anonymous = client.get("/dashboard", params={"project": PROJECT})
        wrong = client.get("/dashboard", params={"project": PROJECT}, auth=(USER, "nope"))
        missing = client.get("/dashboard", params={"project": 999}, auth=(USER, PASSWORD))
        page = client.get("/dashboard", params={"project": PROJECT}, auth=(USER, PASSWORD))
    assert anonymous.status_code == wrong.status_code == 401
    assert missing.status_code == 404
    assert missing.json() == {"detail": "project 999 was never set up"}
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


def test_dashboard_says_no_audits_yet_before_any_audit(tmp_path: Path) -> None:
    with serve(make_settings(tmp_path)) as (client, _):
        client.post("/setup", json=setup_body())
        client.post("/webhook", json=tasks_created([task(i) for i in range(1, 5)]))
        page = client.get("/dashboard", params={"project": PROJECT}).text
    reader = MetricReader()
    reader.feed(page)
    headline = next(text for pointer, text in reader.shown if pointer.startswith("/ai_label"))
    assert headline == "no audits yet"
    assert reader.metrics["/ai_label_accuracy/note"] == "no audits yet"
    assert reader.metrics["/routes/forced"] == "4"  # no judge configured: all to humans


def campaign_status(**changes: Any) -> ProjectStatus:
    """A ``ProjectStatus`` as ``/status`` could answer it, with ``changes``."""
    measured = Agreement(n=2, agree=1, rate=0.5, ci95=(0.1, 0.9))
    fields: dict[str, Any] = {
        "project": 3,
        "model_version": "v2",
        "warnings": [],
        "budget": Budget(share=0.25, allowed=1, used=1, left=0, over=0),
        "routes": Routes(received=4, ai=3, human=1, audit=0, forced=0, forced_unreadable=0),
        "judge_agreement": measured,
        "agreement_by_judge": {},
        "ai_label_accuracy": ai_label_accuracy(3, measured),
        "agreement_by_tag": {},
        "spend": {"cost_usd": 0.01, "human_label_usd": 0.5, "human_cost_saved_usd": 1.5}
        | {"input_tokens": 10, "output_tokens": 2}
        | {"comparisons_judged": 4, "cost_per_1000_comparisons_usd": 2.5},
        "router_versions": [],
        "training": Training(every=50, labels_since_last=0, last=None),
        "top_features": [],
    }
    return ProjectStatus(**(fields | changes))


def shown_as_in_status(status: ProjectStatus) -> MetricReader:
    """The page's metrics, each checked against ``status``."""
    reader = MetricReader()
    reader.feed(render(status))
    document = status.model_dump(mode="json")
    for pointer, text in reader.shown:
        assert shows(text, resolve(document, pointer)), pointer
    return reader


def test_dashboard_escapes_data_and_says_what_became_of_each_router_version() -> None:
    """Tags, feature names and quality measures are data: HTML-escaped, never mathtext."""
    hostile = "<script>alert(1)</script>"
    bad_mathtext = r"$\frac$"
    measured = Agreement(n=2, agree=1, rate=0.5, ci95=(0.1, 0.9))
    made = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    status = campaign_status(
        agreement_by_judge={"org/model~1": measured, hostile: measured},
        agreement_by_tag={bad_mathtext: {hostile: measured, "a/b~c": measured}},
        router_versions=[
            RouterVersionStatus(
                version="v1",
                in_use=False,
                verdict="not adopted",
                summary=f"not adopted: kept v2 because {hostile}",
                n_labels=40,
                created_at=made,
                quality={"held_out_auc": 0.71, bad_mathtext: 1.0},
            ),
            RouterVersionStatus(
                version="v2",
                in_use=True,
                verdict="starting router",
                summary="the router the backend started with, in use: no refit was adopted",
                n_labels=None,
                created_at=None,
                quality={},
            ),
        ],
        training=Training(
            every=50,
            labels_since_last=7,
            last=LastTraining(
                at=made, n_labels=40, adopted=False, candidate="v1", in_use="v2", reason=hostile
            ),
        ),
        top_features=[{"feature": f"category={bad_mathtext}", "weight": 0.2}],
    )
    page = render(status)
    assert hostile not in page and "&lt;script&gt;" in page
    shown = shown_as_in_status(status).metrics
    assert shown[f"/agreement_by_tag/{bad_mathtext}/a~1b~0c/n"] == "2"
    assert shown["/agreement_by_judge/org~1model~01/n"] == "2"
    assert shown["/router_versions/0/quality/held_out_auc"] == "0.7100"
    assert shown["/router_versions/0/created_at"] == "2026-01-02 03:04 UTC"
    assert shown["/router_versions/1/in_use"] == "yes"
    assert (
        shown["/training/last/summary"] == f"kept v2 (candidate v1 not adopted) because {hostile}"
    )
    assert shown["/training/labels_since_last"] == "7"


def test_dashboard_puts_warnings_first_and_shows_the_human_queue_adding_up() -> None:
    over = OverBudget(allowed=4, used=10, forced=7, forced_unreadable=7, share=0.25)
    status = campaign_status(
        warnings=[over],
        budget=Budget(share=0.25, allowed=4, used=10, left=0, over=6),
        routes=Routes(received=16, ai=6, human=2, audit=1, forced=7, forced_unreadable=7),
    )
    page = render(status)
    shown = shown_as_in_status(status).metrics
    assert shown["/warnings/0/message"] == over.message
    assert page.index('data-metric="/warnings/0/message"') < page.index("Budget and routing")
    assert shown["/budget/over"] == "6"
    queue = re.sub(
        r"<[^>]+>", "", page.split("sent to humans (budget used)")[1].split("</div></div>")[0]
    )
    assert queue == "10= 2 picked by the router + 1 audits + 7 forced (7 unreadable)"
    assert "Warnings" not in render(campaign_status())


def test_tag_values_are_one_table_those_that_differ_most_from_the_overall_rate_first() -> None:
    """Overall 50%: a value whose interval excludes it comes before one further from it by
    rate but too small to tell; a value at the overall rate comes last."""

    def measured(n: int, agree: int) -> Agreement:
        return agreement([("A", "A")] * agree + [("A", "B")] * (n - agree))

    status = campaign_status(
        judge_agreement=measured(100, 50),
        agreement_by_tag={
            "category": {"math": measured(40, 20), "code": measured(40, 36)},
            "safety": {"high": measured(2, 0), "low": measured(30, 12)},
        },
    )
    page = render(status)
    shown_as_in_status(status)
    assert "<h3>" not in page  # no section per tag dimension
    tag_table = page.split("Agreement by feature")[1].split("</table>")[0]
    rows = re.findall(r'data-metric="/(judge_agreement|agreement_by_tag/\w+/\w+)/n"', tag_table)
    assert rows == [
        "judge_agreement",
        "agreement_by_tag/category/code",  # 90%, its interval excludes 50%
        "agreement_by_tag/safety/high",  # 0% of 2: further, but could be noise
        "agreement_by_tag/safety/low",  # 40%
        "agreement_by_tag/category/math",  # 50%
    ]


def test_status_command_says_where_the_dashboard_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve_on_loopback(make_settings(tmp_path)) as (url, _):
        requests.post(f"{url}/setup", json=setup_body(), timeout=10).raise_for_status()
        code = main(["status", "--project", str(PROJECT), "--backend-url", url])
    out, err = capsys.readouterr()
    assert code == 0 and f'"project": {PROJECT}' in out
    assert f"{url}/dashboard?project={PROJECT}" in err


def test_dashboard_shows_the_quality_target_and_its_risk_coverage_curve() -> None:
    curve = [
        CurvePoint(threshold=t, n=n, coverage=n / 80, agreement=a, lower_bound=b, passed=p)
        for t, n, a, b, p in [
            (-1.2, 20, 0.95, 0.86, True),
            (-0.4, 40, 0.9, 0.83, True),
            (0.3, 60, 0.83, 0.76, False),
        ]
    ]
    certified = QualityTarget(
        target_agreement=0.8,
        confidence=0.9,
        certified=True,
        threshold=-0.4,
        certified_agreement=0.83,
        ai_share_allowed=0.5,
        calibration=80,
        looks=2,
        audit_share=0.05,
        summary="Certified: the judge labels only tasks scoring at most -0.4000, ...",
        curve=curve,
    )
    page = render(campaign_status(quality_target=certified))
    shown = shown_as_in_status(campaign_status(quality_target=certified)).metrics
    assert shown["/quality_target/certified_agreement"] == "83.0%"
    assert shown["/quality_target/threshold"] == "-0.4000"
    assert shown["/quality_target/ai_share_allowed"] == "50.0%"
    assert shown["/quality_target/summary"].startswith("Certified: ")
    assert "<h2>Quality target</h2>" in page and "certified threshold" in page
    assert page.index("Quality target") < page.index("Judge quality")

    waiting = certified.model_copy(
        update={
            "certified": False,
            "threshold": None,
            "certified_agreement": None,
            "ai_share_allowed": None,
            "curve": [],
            "summary": "Not yet certified (no labelled audits have been looked at yet). ...",
        }
    )
    shown = shown_as_in_status(campaign_status(quality_target=waiting)).metrics
    assert shown["/quality_target/certified_agreement"] == "not yet"
    assert shown["/quality_target/summary"].startswith("Not yet certified")
    assert "<h2>Quality target</h2>" not in render(campaign_status())
