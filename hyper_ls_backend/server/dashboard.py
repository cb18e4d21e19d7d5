"""The campaign dashboard (``GET /dashboard?project=ID``): ``/status`` as one HTML page.

Self-contained (inline CSS, inline SVG plots from ``charts``, no script and no network
resource), so it works offline. Every number shown sits in an element whose
``data-metric`` attribute is the JSON Pointer (RFC 6901) of that number in the project's
``/status`` answer: the page can be checked against the API, and scraped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import reduce
from html import escape
from typing import Any

from hyper_ls_backend.server import charts
from hyper_ls_backend.server.status import Agreement, ProjectStatus

JsonPath = Sequence[str | int]
Metric = Callable[..., str]

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 1.5em; color: #222; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
.sub { color: #666; } .card .sub { font-size: 0.85em; } .card .sub .metric { font-size: 1em; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 0.9em; min-width: 9em; }
.card .label { color: #666; font-size: 0.85em; } .card .metric { font-size: 1.4em; }
.headline { background: #f3f7fb; border-color: #9cb8d6; }
table { border-collapse: collapse; margin: 0.8em 0; }
td, th { border-bottom: 1px solid #eee; padding: 0.25em 0.7em; text-align: left; }
td .metric { font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } svg { max-width: 100%; height: auto; }
.warnings { background: #fdf0e6; border: 2px solid #d9822b; border-radius: 6px;
            padding: 0.6em 1em; margin: 1em 0; }
.warnings h2 { border: 0; margin: 0 0 0.3em; color: #a3550f; }
.warnings li { margin: 0.3em 0; }
.over { border-color: #d9822b; background: #fdf0e6; }
"""


def pointer(path: JsonPath) -> str:
    """The RFC 6901 JSON Pointer of ``path``."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def usd(value: float) -> str:
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.4f}"


def share(value: float) -> str:
    return f"{value:.1%}"


def whole(value: float) -> str:
    return f"{value:,.0f}"


def tenths(value: float) -> str:
    return f"{value:,.1f}"


def when(value: str) -> str:
    """An ISO timestamp, to the minute."""
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M %Z").strip()


def plain(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4f}"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def metric_renderer(data: dict[str, Any]) -> Metric:
    """``metric(path, fmt=plain, missing=...)``: the value at ``path`` of ``data``, formatted,
    in a ``<span data-metric="POINTER">``; ``missing`` is shown for ``None`` (also when a
    step of the path is ``None``, e.g. the bounds of an interval not measured yet)."""

    def metric(path: JsonPath, fmt: Callable[[Any], str] = plain, missing: str = "no data") -> str:
        value = reduce(lambda node, key: None if node is None else node[key], path, data)
        text = missing if value is None else fmt(value)
        return f'<span class="metric" data-metric="{escape(pointer(path))}">{escape(text)}</span>'

    return metric


def card(label: str, content: str, headline: bool = False, kind: str = "") -> str:
    """``kind``: an extra CSS class (``over``: a number past its limit)."""
    classes = " ".join(["card", *(["headline"] if headline else []), *([kind] if kind else [])])
    return f'<div class="{classes}"><div class="label">{escape(label)}</div>{content}</div>'


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table of ready-made cell HTML (headers are escaped here)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(svg: str | None, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>" if svg else ""


def interval(metric: Metric, path: JsonPath, fmt: Callable[[Any], str]) -> str:
    """An interval's two bounds (``path`` ends at the pair), as two metrics."""
    return metric([*path, 0], fmt, missing="-") + " &ndash; " + metric([*path, 1], fmt, missing="-")


def agreement_cells(metric: Metric, path: JsonPath) -> list[str]:
    return [
        metric([*path, "n"]),
        metric([*path, "agree"]),
        metric([*path, "rate"], share),
        interval(metric, [*path, "ci95"], share),
    ]


AGREEMENT_HEADER = ("", "labelled", "agree", "agreement", "95% interval")
TAG_ROWS_PLOTTED = 12


def warnings_section(status: ProjectStatus, metric: Metric) -> str:
    """First on the page: what a team lead must not miss."""
    if not status.warnings:
        return ""
    items = "".join(
        f"<li>{metric(['warnings', i, 'message'])}</li>" for i in range(len(status.warnings))
    )
    return f'<div class="warnings"><h2>Warnings</h2><ul>{items}</ul></div>'


def budget_section(status: ProjectStatus, metric: Metric) -> str:
    """The human queue is the budget used: its three parts are shown adding up to it."""
    over = status.budget.over
    queue = (
        f"{metric(['budget', 'used'])}<div class='sub'>= {metric(['routes', 'human'])} "
        f"picked by the router + {metric(['routes', 'audit'])} audits + "
        f"{metric(['routes', 'forced'])} forced ({metric(['routes', 'forced_unreadable'])} "
        "unreadable)</div>"
    )
    cards = [
        card("human budget", metric(["budget", "share"], share)),
        card("human labels allowed", metric(["budget", "allowed"])),
        card("sent to humans (budget used)", queue, kind="over" if over else ""),
        card("over budget", metric(["budget", "over"]), kind="over")
        if over
        else card("left", metric(["budget", "left"])),
        card("labelled by the judge (ai)", metric(["routes", "ai"])),
        card("tasks received", metric(["routes", "received"])),
    ]
    return f'<h2>Budget and routing</h2><div class="cards">{"".join(cards)}</div>' + figure(
        charts.budget_and_routes(status.budget, status.routes),
        "Sent to humans: human, the router's picks by score; audit, judge-bound tasks sent "
        "to humans at random to measure the judge; forced, the task was unreadable or the "
        "judge gave no usable verdict (forced tasks go to humans whatever the budget). "
        "ai: labelled by the judge.",
    )


def judge_section(status: ProjectStatus, metric: Metric) -> str:
    accuracy = status.ai_label_accuracy
    estimate = card(
        "estimated accuracy of the AI-labelled set",
        metric(["ai_label_accuracy", "audits", "rate"], share, missing="no audits yet")
        + (
            " <span class='sub'>(95%: "
            + interval(metric, ["ai_label_accuracy", "audits", "ci95"], share)
            + ")</span>"
            if accuracy.audits.ci95
            else ""
        )
        + f"<div class='sub'>{metric(['ai_label_accuracy', 'note'])}</div>",
        headline=True,
    )
    wrong = card(
        "AI labels likely wrong (95%)",
        (
            interval(metric, ["ai_label_accuracy", "expected_wrong_ci95"], tenths)
            if accuracy.expected_wrong_ci95
            else "no audits yet"
        )
        + f" <span class='sub'>of {metric(['ai_label_accuracy', 'ai_labelled'])}</span>",
    )
    overall = [
        ("all labelled", status.judge_agreement, ["judge_agreement"]),
        ("audits", accuracy.audits, ["ai_label_accuracy", "audits"]),
    ]
    if len(status.agreement_by_judge) > 1:
        overall += [
            (f"judge {model}, all labelled", judged, ["agreement_by_judge", model])
            for model, judged in status.agreement_by_judge.items()
        ]
    parts = [
        "<h2>Judge quality</h2>",
        f'<div class="cards">{estimate}{wrong}</div>',
        "<p class='sub'>Agreement on all labelled tasks understates the judge: the router "
        "sends humans the hard cases. Audits are a uniform random share of the tasks the "
        "router would give the judge, so agreement on them estimates the AI-labelled set "
        "without bias.</p>",
        table(
            AGREEMENT_HEADER,
            [[escape(label), *agreement_cells(metric, path)] for label, _, path in overall],
        ),
        figure(
            charts.agreement([(label, a) for label, a, _ in overall], "Judge-human agreement"),
            "Wilson 95% intervals.",
        ),
    ]
    return "".join(parts)


def differs_from(overall: float | None, measured: Agreement) -> tuple[float, float]:
    """How far a tag value's agreement is from the overall rate, for sorting (largest
    first): first by how far the overall rate lies outside the value's 95% interval (0
    inside it: the difference may be noise), then by the difference of the rates."""
    if overall is None or measured.rate is None or measured.ci95 is None:
        return (0.0, 0.0)
    low, high = measured.ci95
    return (max(low - overall, overall - high, 0.0), abs(measured.rate - overall))


def tags_section(status: ProjectStatus, metric: Metric) -> str:
    """Every tag value in one table, below the overall agreement, those that differ most
    from it first."""
    parts = ["<h2>Agreement by feature</h2>"]
    if not status.agreement_by_tag:
        parts.append(
            "<p>No labelled task carries tags yet (they come from the tagger, or from a "
            "task's <code>data.tags</code> and <code>data.meta.category</code>).</p>"
        )
        return "".join(parts)
    overall = status.judge_agreement.rate
    values = sorted(
        (
            (dimension, value, measured)
            for dimension, by_value in status.agreement_by_tag.items()
            for value, measured in by_value.items()
        ),
        key=lambda row: differs_from(overall, row[2]),
        reverse=True,
    )
    rows = [
        ["all labelled", "", *agreement_cells(metric, ["judge_agreement"])],
        *(
            [
                escape(dimension),
                escape(value),
                *agreement_cells(metric, ["agreement_by_tag", dimension, value]),
            ]
            for dimension, value, _ in values
        ),
    ]
    plotted = [(f"{dimension}={value}", measured) for dimension, value, measured in values]
    return "".join(
        [
            *parts,
            "<p class='sub'>The tag values whose judge-human agreement differs most from the "
            "overall rate come first: first those whose 95% interval excludes it.</p>",
            table(("tag", "value", *AGREEMENT_HEADER[1:]), rows),
            figure(
                charts.agreement(plotted[:TAG_ROWS_PLOTTED], "Agreement by tag value"),
                f"The {min(len(plotted), TAG_ROWS_PLOTTED)} values that differ most; "
                "Wilson 95% intervals.",
            ),
        ]
    )


def spend_section(status: ProjectStatus, metric: Metric) -> str:
    cards = [
        card("LM spend", metric(["spend", "cost_usd"], usd)),
        card("human cost saved", metric(["spend", "human_cost_saved_usd"], usd), headline=True),
        card("price per human label", metric(["spend", "human_label_usd"], usd)),
        card("LM input tokens", metric(["spend", "input_tokens"], whole)),
        card("LM output tokens", metric(["spend", "output_tokens"], whole)),
        card(
            "LM cost per 1,000 comparisons",
            metric(["spend", "cost_per_1000_comparisons_usd"], usd, missing="none judged yet"),
        ),
    ]
    return (
        f'<h2>Spend</h2><div class="cards">{"".join(cards)}</div>'
        + batches_part(status, metric)
        + figure(
            charts.spend(status.spend["cost_usd"], status.spend["human_cost_saved_usd"]),
            "Human cost saved: AI-labelled tasks at the price per human label.",
        )
    )


def batches_part(status: ProjectStatus, metric: Metric) -> str:
    """Message Batches, when any was sent: what their calls cost, and those in flight."""
    if not status.batches.sent and not status.batches.in_flight:
        return ""
    flying = [
        [
            metric(["batches", "in_flight", i, "batch_id"], missing="being sent"),
            metric(["batches", "in_flight", i, "model"]),
            metric(["batches", "in_flight", i, "requests"], whole),
            metric(["batches", "in_flight", i, "expires_at"], when, missing="-"),
        ]
        for i in range(len(status.batches.in_flight))
    ]
    summary = (
        f"<p>{metric(['batches', 'sent'], whole)} Message Batches sent; "
        f"{metric(['batches', 'calls'], whole)} judge calls answered in them cost "
        f"{metric(['batches', 'cost_usd'], usd)} at the batch price instead of "
        f"{metric(['batches', 'list_cost_usd'], usd)} one by one.</p>"
    )
    if not flying:
        return summary
    return summary + table(("batch in flight", "model", "requests", "expires"), flying)


def versions_section(status: ProjectStatus, metric: Metric) -> str:
    """The last training in a sentence, then each router version once, in plain words."""
    training = status.training
    parts = [
        "<h2>Training and router versions</h2>",
        f"<p>Routing with {metric(['model_version'])}, the model version Label Studio "
        "shows. A refit runs after every "
        f"{metric(['training', 'every'])} labels saved "
        f"({metric(['training', 'labels_since_last'])} since the last) and on Label "
        "Studio's Start training; a refit that keeps the router in use leaves the version "
        "Label Studio shows as it is.</p>",
    ]
    if training.last is None:
        parts.append("<p>No training yet.</p>")
    else:
        parts.append(
            f"<p><b>Last training</b> ({metric(['training', 'last', 'at'], when)}, on "
            f"{metric(['training', 'last', 'n_labels'])} labelled tasks): "
            f"{metric(['training', 'last', 'summary'])}.</p>"
        )
    rows = [
        [
            metric(["router_versions", i, "version"]),
            metric(["router_versions", i, "created_at"], when, missing="-"),
            metric(["router_versions", i, "in_use"]),
            metric(["router_versions", i, "summary"]),
            metric(["router_versions", i, "quality", "held_out_auc"], plain, missing="-")
            if "held_out_auc" in version.quality
            else "-",
        ]
        for i, version in enumerate(status.router_versions)
    ]
    parts += [
        table(("version", "made", "in use", "what happened", "held-out AUC"), rows),
        figure(
            charts.router_quality(status.router_versions),
            "Quality measured when each was proposed (every measure: /status).",
        ),
    ]
    return "".join(parts)


def target_section(status: ProjectStatus, metric: Metric) -> str:
    """The quality target: certified or not in plain words, its numbers, and the last
    look's risk-coverage curve with the certified point marked."""
    target = status.quality_target
    if target is None:
        return ""
    cards = [
        card(
            "target agreement",
            metric(["quality_target", "target_agreement"], share)
            + f"<div class='sub'>at {metric(['quality_target', 'confidence'], share)} "
            "confidence</div>",
        ),
        card(
            "certified agreement",
            metric(["quality_target", "certified_agreement"], share, missing="not yet"),
            headline=True,
        ),
        card(
            "threshold",
            metric(["quality_target", "threshold"], lambda v: f"{v:.4f}", missing="-"),
        ),
        card(
            "share the judge may label",
            metric(["quality_target", "ai_share_allowed"], share, missing="-"),
        ),
        card("labelled audits (calibration)", metric(["quality_target", "calibration"])),
        card(
            "audit share now",
            metric(["quality_target", "audit_share"], share)
            + f"<div class='sub'>{metric(['quality_target', 'looks'])} looks</div>",
        ),
    ]
    return (
        "<h2>Quality target</h2>"
        f"<p>{metric(['quality_target', 'summary'])}</p>"
        f'<div class="cards">{"".join(cards)}</div>'
        + figure(
            charts.risk_coverage(target),
            "From the last look at the audits: the agreement of what the judge would label "
            "(and its certified bound) against the share it would label, one point per "
            "threshold tried; the ring marks the certified threshold.",
        )
    )


def features_section(status: ProjectStatus, metric: Metric) -> str:
    if not status.top_features:
        return "<h2>What moves routing</h2><p>The current strategy has no feature weights.</p>"
    rows = [
        [metric(["top_features", i, "feature"]), metric(["top_features", i, "weight"])]
        for i in range(len(status.top_features))
    ]
    return (
        "<h2>What moves routing</h2>"
        "<p class='sub'>The current router's weight of each feature on its own (the paper's "
        "feature-gain analysis, read off the model in use).</p>"
        + table(("feature", "weight"), rows)
        + figure(charts.feature_weights(status.top_features), "Positive: toward humans.")
    )


SECTIONS = (
    warnings_section,
    budget_section,
    target_section,
    judge_section,
    tags_section,
    spend_section,
    versions_section,
    features_section,
)


def render(status: ProjectStatus) -> str:
    """The whole page for ``status``."""
    metric = metric_renderer(status.model_dump(mode="json"))
    title = f"HyPER campaign: project {status.project}"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f"<p class='sub'>Project {metric(['project'])}. "
        f"The same numbers as JSON: <a href='status?project={status.project}'>/status</a>.</p>"
        f"<p class='sub'>The campaign's preference dataset (every task, its label and where "
        f"it came from): <a href='export?project={status.project}&amp;format=pairs' download>"
        f"HyPER pairs</a> or <a href='export?project={status.project}&amp;format=trl' download>"
        "TRL prompt/chosen/rejected</a>.</p>"
        + "".join(section(status, metric) for section in SECTIONS)
        + "</body></html>"
    )
