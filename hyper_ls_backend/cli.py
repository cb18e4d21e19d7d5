"""``hyper-ls``: route, evaluate and fit routers from the command line.

Built on argparse: the contracts take lists as ``--budgets 0.1 0.25 0.5``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version as package_version
from pathlib import Path
from typing import NamedTuple

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hyper_ls_backend.core.calibration import certify, usable
from hyper_ls_backend.core.comparison import Comparison
from hyper_ls_backend.core.dataset import (
    DatasetError,
    pooled_training_set,
    read_comparisons,
)
from hyper_ls_backend.core.guarantee import AgreementGuarantee
from hyper_ls_backend.core.ppm import PROXY_RMS
from hyper_ls_backend.core.router import Router, route_policy
from hyper_ls_backend.core.strategies import STRATEGIES, PPMStrategy, make_strategy
from hyper_ls_backend.core.streaming import RouteSummary, route_file
from hyper_ls_backend.eval.campaign import (
    CAMPAIGN_JUDGES,
    SPLITS,
    CampaignSettings,
    simulate_online,
)
from hyper_ls_backend.eval.crossval import simulate as run_simulation
from hyper_ls_backend.eval.crossval import strategy_variants
from hyper_ls_backend.eval.guarantee import evaluate_guarantee, score_views
from hyper_ls_backend.eval.transfer import TRANSFER_STRATEGIES, leave_one_dataset_out
from hyper_ls_backend.plots import plot_campaigns, plot_guarantee, plot_simulation
from hyper_ls_backend.priors import load_default_router
from hyper_ls_backend.settings import Settings

DEFAULT_STRATEGY = "judge-signals"
err = Console(stderr=True, highlight=False)


class UsageProblem(Exception):
    """A user-facing error: printed as one clear message, exit code 2, no traceback."""


def progress_bar(description: str) -> Progress:
    """A progress bar on stderr, shown only when stderr is a terminal."""
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
    )


def budget_share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a share between 0 and 1, got {text}")
    return value


def share_strictly(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def strategy_name(text: str) -> str:
    if text not in STRATEGIES:
        raise argparse.ArgumentTypeError(
            f"unknown strategy {text!r} (choose from: {', '.join(STRATEGIES)})"
        )
    return text


class ChosenRouter(NamedTuple):
    router: Router
    fit_on_inputs: bool
    """A strategy that learns nothing, taking its reference from the inputs as they stream."""


def choose_router(
    model: Path | None, strategy: str | None, labeled: Path | None, prior_strength: float
) -> ChosenRouter:
    """The router for ``route``: ``--model`` (default: the shipped prior), refitted on
    ``--labeled`` when given; or another ``--strategy`` over the same features."""
    base = Router.load(model) if model else load_default_router()
    labelled = read_comparisons(labeled) if labeled else None
    name = strategy or base.strategy.name
    if name == base.strategy.name:
        chosen = base.refit(labelled, prior_strength=prior_strength) if labelled else base
        return ChosenRouter(chosen, fit_on_inputs=False)
    fresh = make_strategy(name)
    if not fresh.learned:
        # Fixed strategies learn nothing from labels; the inputs set the reference scores.
        return ChosenRouter(Router(fresh, featurizer=base.featurizer), fit_on_inputs=True)
    if labelled is None:
        raise UsageProblem(
            f"strategy {name!r} must be fitted: pass --model fitted with it "
            f"('hyper-ls fit DATA --strategy {name} --out MODEL') or --labeled DATA"
        )
    return ChosenRouter(Router(fresh, featurizer=base.featurizer).fit(labelled), False)


def route(args: argparse.Namespace) -> None:
    """Decide, for each comparison, whether a human or the LM judge labels it."""
    if args.target_agreement is None and args.budget is None:
        raise UsageProblem("--budget is required (or --target-agreement with --calibration)")
    if (args.target_agreement is None) != (args.calibration is None):
        raise UsageProblem("--target-agreement and --calibration go together")
    router, fit_on_inputs = choose_router(
        args.model, args.strategy, args.labeled, args.prior_strength
    )
    guarantee = calibrate(router, args) if args.target_agreement is not None else None
    certificate = guarantee.certificate_ if guarantee is not None else None
    # without a cap, --target-agreement lets humans take everything the guarantee leaves
    budget = 1.0 if args.budget is None else args.budget
    with progress_bar("routing") as bar:
        task = bar.add_task("routing", total=None)
        result, router = route_file(
            args.input,
            args.out,
            router,
            route_policy(budget, certificate),
            fit_on_inputs=fit_on_inputs,
            n_jobs=args.jobs,
            progress=lambda n: bar.advance(task, n),
        )
    if result.n == 0:
        raise UsageProblem(f"{args.input}: no comparisons to route (the file has no rows)")
    err.print(
        f"{result.n} comparisons: {result.n_human} to humans, {result.n_ai} to the judge "
        f"(budget {result.budget}, strategy {router.strategy.name}, model {router.version})"
    )
    if guarantee is not None:
        report_guarantee(guarantee, result, args.budget)
    if result.over_budget:
        err.print(
            f"[yellow]warning:[/] {result.forced_human} comparisons have no judge verdict and "
            f"all went to humans: {result.n_human} exceeds the budget of {result.budget}."
        )


def calibrate(router: Router, args: argparse.Namespace) -> AgreementGuarantee:
    """The guarantee fitted on ``--calibration``, whose every row must carry ``human``."""
    calibration = read_comparisons(args.calibration)
    unlabelled = [c.id for c in calibration if not c.human]
    if unlabelled:
        listed = ", ".join(unlabelled[:5]) + (", ..." if len(unlabelled) > 5 else "")
        raise UsageProblem(
            f"{args.calibration}: {len(unlabelled)} rows have no human label ({listed}): "
            "every calibration row needs 'human'"
        )
    kept = usable(calibration)
    if len(kept) < len(calibration):
        err.print(
            f"{len(calibration) - len(kept)} calibration rows have no judge label and do not "
            "calibrate (the judge never labels such a comparison)"
        )
    return certify(router, kept, args.target_agreement, args.confidence)


def report_guarantee(
    guarantee: AgreementGuarantee, result: RouteSummary, cap: float | None
) -> None:
    """What the guarantee allowed, or why there is none."""
    n, ai = result.n, result.n_ai
    promise = (
        f"agreement >= {guarantee.target_agreement:.0%} at {guarantee.confidence:.0%} confidence"
    )
    certified = guarantee.certified_
    # under a certificate the judge labels uncertified only when the cap bound
    cap_bound = ai > 0 and not result.n_certified
    if certified is not None and not cap_bound:
        err.print(
            f"certified {promise}: threshold {certified.threshold:.4f}, certified agreement "
            f"at least {certified.lower_bound:.1%} (calibration {guarantee.n_calibration_}, "
            f"{certified.n} under the threshold at {certified.agreement:.1%}); the judge "
            f"labels {ai} of {n} ({ai / n:.1%})"
        )
        return
    if certified is not None:
        err.print(
            f"[yellow]not certified:[/] the threshold certifying {promise} "
            f"({certified.threshold:.4f}) sends more to humans than --budget {cap} allows: "
            f"routed by the budget, without the guarantee (the judge labels {ai / n:.1%})"
        )
    elif cap is not None and ai > 0:
        err.print(
            f"[yellow]not certified:[/] {escape(guarantee.why_not())}; --budget {cap} cannot "
            f"take every comparison: routed by the budget, without the guarantee"
        )
    else:
        err.print(
            f"[yellow]not certified:[/] {escape(guarantee.why_not())}: all {n} go to humans "
            f"(calibration {guarantee.n_calibration_})"
        )


def fit(args: argparse.Namespace) -> None:
    """Fit a router on labelled comparisons (human votes and judge verdicts). Several files
    weigh the same; a file with judge panels is learned from every judge's view (each judge
    as the primary, with the others as its panel and alone)."""
    if args.proxy_rm and args.strategy != PPMStrategy.name:
        raise UsageProblem(f"--proxy-rm is for --strategy {PPMStrategy.name}")
    params = {"proxy_rm": args.proxy_rm} if args.proxy_rm else {}
    comparisons, weights = pooled_training_set([read_comparisons(path) for path in args.data])
    router = Router(make_strategy(args.strategy, **params)).fit(comparisons, weights)
    router.save(args.out)
    err.print(f"fitted {router.version} on {router.n_fitted_} comparisons -> {args.out}")


def transfer(args: argparse.Namespace) -> None:
    """Leave one dataset out: fit on the others, route every judge view of the held-out one."""
    datasets = {path.stem: read_comparisons(path) for path in args.data}
    if len(datasets) < 2:
        raise UsageProblem("transfer needs at least two datasets (files with distinct names)")
    outcome = leave_one_dataset_out(
        datasets, args.strategies or TRANSFER_STRATEGIES, args.budgets, seeds=args.seeds
    )
    outcome["command"] = args.command_line
    args.report.write_text(json.dumps(outcome, indent=1) + "\n", encoding="utf-8")
    show_transfer(outcome)
    err.print(f"report -> {args.report}")


def simulate(args: argparse.Namespace) -> None:
    """Replay routing on labelled data with grouped CV and compare strategies."""
    if args.online:
        simulate_campaigns(args)
        return
    if args.target_agreement:
        simulate_guarantee(args)
        return
    if args.prior or SEED_FIELD in str(args.data):
        raise UsageProblem(f"--prior and {SEED_FIELD} in DATA are for --online replays")
    comparisons = read_comparisons(args.data)
    names = args.strategies or list(STRATEGIES)
    runs = len(strategy_variants(names, args.proxy_rms))
    with progress_bar("simulating") as bar:
        task = bar.add_task("simulating", total=args.seeds * args.folds * runs)
        outcome = run_simulation(
            comparisons,
            names,
            args.budgets,
            seeds=args.seeds,
            folds=args.folds,
            progress=lambda: bar.advance(task),
            proxy_rms=args.proxy_rms,
        )
    outcome["command"] = args.command_line
    args.report.write_text(json.dumps(outcome, indent=1) + "\n", encoding="utf-8")
    plot_simulation(outcome, args.plot)
    show_simulation(outcome)
    err.print(f"report -> {args.report}, plot -> {args.plot}")


def simulate_guarantee(args: argparse.Namespace) -> None:
    """``simulate --target-agreement``: how often the certified threshold keeps its promise
    over random calibration/routing splits by group, against the naive threshold."""
    router = Router.load(args.model) if args.model else load_default_router()
    comparisons = read_comparisons(args.data)
    views = score_views(comparisons, router)
    reports = []
    with progress_bar("splits") as bar:
        task = bar.add_task("splits", total=args.seeds * len(views))
        for view in views:
            report = evaluate_guarantee(
                view,
                args.target_agreement,
                confidence=args.confidence,
                splits=args.seeds,
                calibration_share=args.calibration_share,
                progress=lambda: bar.advance(task),
            )
            reports.append({"dataset": args.data.stem, **report})
    outcome = {"command": args.command_line, "router": router.version, "views": reports}
    args.report.write_text(json.dumps(outcome, indent=1) + "\n", encoding="utf-8")
    plot_guarantee(outcome, args.plot)
    table = Table(
        title=f"agreement guarantee at {args.confidence:.0%} confidence, {args.seeds} splits "
        f"by group ({args.calibration_share:.0%} calibration), router {router.version}"
    )
    columns = ("judges", "target", "held (95% CI)", "certified", "AI share", "agreement")
    for column in (*columns, "naive held", "naive AI share"):
        table.add_column(column)
    for report in reports:
        for row in report["targets"]:
            held, naive = row["held"], row["naive"]
            table.add_row(
                report["view"],
                f"{row['target']:.2f}",
                f"{held['rate']:.2f} ({held['ci95'][0]:.2f}-{held['ci95'][1]:.2f})",
                f"{row['certified']:.2f}",
                f"{row['ai_share']['mean']:.3f}",
                f"{row['agreement']['mean']:.3f}" if row["agreement"] else "-",
                f"{naive['held']['rate']:.2f}",
                f"{naive['ai_share']['mean']:.3f}",
            )
    Console().print(table)
    err.print(f"report -> {args.report}, plot -> {args.plot}")


SEED_FIELD = "{seed}"
"""In ``simulate --online --prior`` DATA, replaced by each seed: one dataset per seed."""


def data_for_seed(data: Path, seed: int) -> Path:
    return Path(str(data).replace(SEED_FIELD, str(seed)))


def simulate_campaigns(args: argparse.Namespace) -> None:
    """``simulate --online``: replay the data as campaigns, frozen prior vs online refits."""
    templated = SEED_FIELD in str(args.data)
    if templated and not args.prior:
        raise UsageProblem(f"{SEED_FIELD} in DATA needs --prior (one campaign per seed)")
    if args.prior and args.split:
        raise UsageProblem("--split and --prior exclude each other: --prior replays all of DATA")
    split = args.split or "groups"
    prior = None
    if args.prior:
        prior = load_default_router() if args.prior == "default" else Router.load(args.prior)
    comparisons = read_comparisons(data_for_seed(args.data, 0) if templated else args.data)

    def draws(seed: int) -> list[Comparison]:
        return comparisons if seed == 0 else read_comparisons(data_for_seed(args.data, seed))

    reports = []
    with progress_bar("campaigns") as bar:
        task = bar.add_task("campaigns", total=len(args.budgets))
        for budget in args.budgets:
            settings = CampaignSettings(
                budget=budget,
                batch_size=args.batch_size,
                audit_share=args.audit_share,
                refit_every=args.refit_every,
            )
            reports.append(
                simulate_online(
                    comparisons,
                    settings,
                    seeds=args.seeds,
                    split=split,
                    campaign_judge=args.campaign_judge,
                    prior=prior,
                    draws=draws if templated else None,
                )
            )
            bar.advance(task)
    outcome = {"command": args.command_line, "campaigns": reports}
    args.report.write_text(json.dumps(outcome, indent=1) + "\n", encoding="utf-8")
    plot_campaigns(reports, args.plot)
    split_text = f"split by {split}" if prior is None else f"whole data vs {prior.version}"
    table = Table(
        title=f"campaign replays, {split_text}, {args.campaign_judge} judge, {args.seeds} seeds"
    )
    columns = ("budget", "policy", "capture x random", "minus frozen (95% CI)", "label accuracy")
    for column in (*columns, "refits adopted"):
        table.add_column(column)
    for report in reports:
        for row in report["results"]:
            table.add_row(
                f"{report['settings']['budget']:.2f}",
                row["policy"],
                f"{row['capture_ratio']['mean']:.2f} ± {row['capture_ratio']['std']:.2f}",
                "{:+.3f} ({:+.3f}, {:+.3f})".format(
                    row["minus_frozen"]["capture_ratio"]["mean"],
                    *row["minus_frozen"]["capture_ratio"]["ci95"],
                ),
                f"{row['label_accuracy']['mean']:.3f} ± {row['label_accuracy']['std']:.3f}",
                f"{row['adopted_refits']['mean']:.1f}",
            )
    Console().print(table)
    err.print(f"report -> {args.report}, plot -> {args.plot}")


def serve(args: argparse.Namespace) -> None:
    """Start the Label Studio ML backend (embedded SQLite state and queue by default)."""
    import uvicorn  # the server's dependencies load only when serving

    from hyper_ls_backend.jobs.forking import start_fork_server

    settings = Settings()
    settings.check_drivers()
    if settings.queue_consumer == "process" and settings.workers == 1:
        # the consumer's code is imported there while the app is imported here (with more
        # workers, each is a process of its own that starts its own fork server)
        start_fork_server()
    from hyper_ls_backend.server.model import LOG_FORMAT

    host, port = args.host or settings.host, args.port or settings.port
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    uvicorn.run(
        "hyper_ls_backend.server.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=settings.workers,
        log_level=settings.log_level.lower(),
    )


def label_config_text(value: str) -> str:
    """``--label-config``: a file, else the name of a shipped config."""
    from hyper_ls_backend.ls import configs

    path = Path(value)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    try:
        return configs.read(value)
    except KeyError:
        raise UsageProblem(
            f"--label-config {value}: no such file, nor a shipped config "
            f"({', '.join(configs.names())})"
        ) from None


def connect(args: argparse.Namespace) -> None:
    """Set up a Label Studio project for HyPER and connect this backend to it."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    from hyper_ls_backend.ls.setup import connect_project

    label_config = label_config_text(args.label_config)
    settings = Settings()
    if settings.label_studio_api_key is None:
        raise UsageProblem("set LABEL_STUDIO_API_KEY (and LABEL_STUDIO_URL) to connect")
    try:
        project_id = connect_project(
            settings,
            backend_url=args.backend_url,
            project_id=args.project,
            title=args.title,
            label_config=label_config,
        )
    except httpx.TransportError as error:
        raise UsageProblem(
            f"no Label Studio at {settings.label_studio_url}: {why_unreachable(error)}; "
            "start it (README: Get a Label Studio running) or set LABEL_STUDIO_URL"
        ) from None
    except ApiError as error:
        keys = "LABEL_STUDIO_API_KEY" + (
            " and LABEL_STUDIO_JUDGE_API_KEY" if settings.label_studio_judge_api_key else ""
        )
        raise UsageProblem(
            f"Label Studio at {settings.label_studio_url} answered {error.status_code}: "
            f"{error.body} (check {keys})"
        ) from None
    err.print(
        f"project {project_id} at {settings.label_studio_url} is routed by {args.backend_url}"
    )
    err.print(
        "the judge's annotations are made in bulk, as the owner of LABEL_STUDIO_JUDGE_API_KEY"
        if settings.label_studio_judge_api_key
        else "the judge's annotations are made one by one, as the user HyPER judge (set "
        "LABEL_STUDIO_JUDGE_API_KEY to a token of a user of the judge's for one call per "
        "import: README)"
    )


def why_unreachable(error: Exception) -> str:
    """A failed request in a few words ("connection refused"), not the HTTP library's dump."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()  # refused, name not known, network unreachable
        if isinstance(cause, TimeoutError):
            return "no answer in time"
        cause = cause.__cause__ or cause.__context__
    return str(error)


def status(args: argparse.Namespace) -> None:
    """Show a project's campaign: budget, routes, judge-human agreement, spend, versions
    (as JSON; the same as a page at the backend's /dashboard)."""
    import requests

    settings = Settings()
    auth = (
        (settings.basic_auth_user, settings.basic_auth_pass.get_secret_value())
        if settings.basic_auth_user and settings.basic_auth_pass
        else None
    )
    try:
        response = requests.get(
            f"{args.backend_url.rstrip('/')}/status",
            params={"project": args.project},
            auth=auth,
            timeout=30,
        )
    except requests.RequestException as error:
        raise UsageProblem(
            f"no backend at {args.backend_url}: {why_unreachable(error)}; start it with "
            "`make serve` (or `hyper-ls serve`), or pass --backend-url"
        ) from None
    if response.status_code != 200:
        raise UsageProblem(f"{args.backend_url} answered {response.status_code}: {response.text}")
    Console().print_json(response.text)
    err.print(f"dashboard: {args.backend_url.rstrip('/')}/dashboard?project={args.project}")


def export(args: argparse.Namespace) -> None:
    """Write a project's preference dataset: every task with its final label and where it
    came from (human, judge, audit), from Label Studio and the backend's store."""
    from label_studio_sdk import LabelStudio

    from hyper_ls_backend.export import ExportFormat, export_project, open_store

    settings = Settings()
    if settings.label_studio_api_key is None:
        raise UsageProblem("set LABEL_STUDIO_API_KEY (and LABEL_STUDIO_URL) to export")
    store = open_store(settings.sqlalchemy_url)
    client = LabelStudio(
        base_url=settings.label_studio_url,
        api_key=settings.label_studio_api_key.get_secret_value(),
        timeout=60,
    )
    summary = export_project(client, store, args.project).write(args.out, ExportFormat(args.format))
    err.print(f"{summary.describe()} -> {args.out}", soft_wrap=True)


def estimate(args: argparse.Namespace) -> None:
    """Estimate a campaign before it starts: the judge's (and tagger's) tokens, dollars and
    wall time for every comparison of INPUT, with and without Message Batches (as JSON)."""
    from hyper_ls_backend.core.dataset import iter_comparisons
    from hyper_ls_backend.estimate import JudgeModel, configured_judges
    from hyper_ls_backend.estimate import estimate as estimate_campaign
    from hyper_ls_backend.lm.pricing import DEFAULT_PRICES, Price, PriceTable

    settings = Settings()
    judges = [JudgeModel.parse(j) for j in args.judges] if args.judges else None
    prices = PriceTable(
        {**DEFAULT_PRICES, **{m: Price(*rates) for m, rates in settings.hyper_lm_prices.items()}}
    )
    with args.input.open(encoding="utf-8-sig") as lines:
        planned = estimate_campaign(
            iter_comparisons(lines, source=str(args.input)),
            judges or configured_judges(settings),
            settings,
            prices=prices,
            latency_s=args.latency_s,
            concurrency=args.concurrency or settings.hyper_judge_concurrency,
            judge_output_tokens=args.output_tokens,
            batch_turnaround_s=args.batch_hours * 3600,
        )
    Console().print_json(planned.model_dump_json())
    err.print(
        f"{planned.comparisons:,} comparisons: ${planned.cost_usd:,.2f} in "
        f"{planned.wall_time_s / 60:,.1f} min call by call; ${planned.batch_cost_usd:,.2f} "
        f"in about {planned.batch_wall_time_s / 3600:,.1f} h through Message Batches "
        f"({'as HYPER_JUDGE_BATCH would' if planned.batched else 'not as configured'})",
        soft_wrap=True,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyper-ls",
        description="HyPER for Label Studio: route comparisons to humans or an LM judge.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {package_version('hyper-ls-backend')}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    routing = commands.add_parser(
        "route",
        help=route.__doc__,
        description=route.__doc__
        + (" Reads no human labels: the output is the same with human/gold removed."),
    )
    routing.add_argument("input", type=Path, metavar="INPUT.jsonl")
    routing.add_argument(
        "--budget",
        type=budget_share,
        help="share of comparisons humans may label (0-1); with --target-agreement, an "
        "optional cap on humans (if it binds the guarantee cannot be given)",
    )
    routing.add_argument(
        "--target-agreement",
        type=share_strictly,
        help="route to the judge only what certifies that its labels agree with a single "
        "human at least this often (needs --calibration)",
    )
    routing.add_argument(
        "--confidence",
        type=share_strictly,
        default=0.9,
        help="--target-agreement holds with this probability (default 0.9)",
    )
    routing.add_argument(
        "--calibration",
        type=Path,
        metavar="LABELLED.jsonl",
        help="human-labelled comparisons with judge verdicts, alike to INPUT, that certify "
        "the threshold (every row needs 'human')",
    )
    routing.add_argument("--out", type=Path, required=True, help="one decision per line")
    routing.add_argument("--strategy", type=strategy_name, help="default: the model's strategy")
    routing.add_argument("--model", type=Path, help="a fitted router (default: the shipped prior)")
    routing.add_argument(
        "--labeled", type=Path, help="human-labelled comparisons of this campaign to refit on first"
    )
    routing.add_argument(
        "--prior-strength",
        type=float,
        default=200.0,
        help="how many labels the prior is worth when refitting (default 200)",
    )
    routing.add_argument(
        "--jobs",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="processes measuring texts (default: all cores)",
    )
    routing.set_defaults(handler=route)

    fitting = commands.add_parser("fit", help=fit.__doc__, description=fit.__doc__)
    fitting.add_argument("data", type=Path, nargs="+", metavar="DATA.jsonl")
    fitting.add_argument("--out", type=Path, required=True, help="where to write the router")
    fitting.add_argument("--strategy", type=strategy_name, default=DEFAULT_STRATEGY)
    fitting.add_argument(
        "--proxy-rm",
        choices=PROXY_RMS,
        help="--strategy hyper: the reward model each label mix is scored with (default "
        "ridge; docs/evaluation.md compares them)",
    )
    fitting.set_defaults(handler=fit)

    simulation = commands.add_parser(
        "simulate", help=simulate.__doc__, description=simulate.__doc__
    )
    simulation.add_argument("data", type=Path, metavar="DATA.jsonl")
    simulation.add_argument(
        "--budgets", type=budget_share, nargs="+", default=[0.1, 0.25, 0.5, 0.75]
    )
    simulation.add_argument(
        "--strategies", type=strategy_name, nargs="+", help="default: all of them"
    )
    simulation.add_argument(
        "--proxy-rms",
        choices=PROXY_RMS,
        nargs="+",
        default=list(PROXY_RMS),
        help="hyper is run with each of these proxy reward models (default: all three)",
    )
    simulation.add_argument("--seeds", type=int, default=5, help="each seed is another split")
    simulation.add_argument("--folds", type=int, default=5, help="grouped CV folds")
    simulation.add_argument("--report", type=Path, default=Path("simulation.json"))
    simulation.add_argument("--plot", type=Path, default=Path("simulation.png"))
    simulation.add_argument(
        "--online",
        action="store_true",
        help="replay campaigns instead: comparisons arrive in batches, labels come back, "
        "the router refits (frozen prior vs online vs baselines)",
    )
    simulation.add_argument(
        "--split",
        choices=SPLITS,
        help="--online (default groups): the prior sees half the groups, or half the "
        "categories; turn: the prior's turn-1 vs the campaign's turn-2 comparisons; "
        "models: the prior's comparisons with the weakest third of the models vs the "
        "campaign's among the others (groups never on both sides)",
    )
    simulation.add_argument(
        "--prior",
        metavar="MODEL.json|default",
        help="--online: replay all of DATA as one campaign per seed (seeded arrival order) "
        "against this fitted router ('default': the shipped prior) instead of splitting it; "
        f"a {SEED_FIELD} in DATA reads another file per seed",
    )
    simulation.add_argument(
        "--campaign-judge",
        choices=CAMPAIGN_JUDGES,
        default="real",
        help="--online: the campaign's judge; topic-guess is a synthetic stress test (the judge "
        "guesses in 2 seed-chosen categories the prior knows nothing of)",
    )
    simulation.add_argument("--batch-size", type=int, default=50, help="--online")
    simulation.add_argument(
        "--audit-share",
        type=float,
        default=0.05,
        help="--online: share of the judge-bound comparisons audited, as HYPER_AUDIT_SHARE",
    )
    simulation.add_argument("--refit-every", type=int, default=50, help="--online: new labels")
    simulation.add_argument(
        "--target-agreement",
        type=share_strictly,
        nargs="+",
        help="measure the agreement guarantee instead: over --seeds random splits by group, "
        "how often the AI-labelled part reaches each target (and the naive threshold's)",
    )
    simulation.add_argument(
        "--confidence", type=share_strictly, default=0.9, help="--target-agreement (1 - delta)"
    )
    simulation.add_argument(
        "--calibration-share",
        type=share_strictly,
        default=0.3,
        help="--target-agreement: share of the groups that calibrate",
    )
    simulation.add_argument(
        "--model", type=Path, help="--target-agreement: the router (default: the shipped prior)"
    )
    simulation.set_defaults(handler=simulate)

    transferring = commands.add_parser(
        "transfer", help=transfer.__doc__, description=transfer.__doc__
    )
    transferring.add_argument("data", type=Path, nargs="+", metavar="DATA.jsonl")
    transferring.add_argument("--budgets", type=budget_share, nargs="+", default=[0.1, 0.25, 0.5])
    transferring.add_argument(
        "--strategies",
        type=strategy_name,
        nargs="+",
        help=f"default: {' '.join(TRANSFER_STRATEGIES)}",
    )
    transferring.add_argument("--seeds", type=int, default=5, help="how exact ties are broken")
    transferring.add_argument("--report", type=Path, default=Path("transfer.json"))
    transferring.set_defaults(handler=transfer)

    serving = commands.add_parser("serve", help=serve.__doc__, description=serve.__doc__)
    serving.add_argument("--host", help="default: $HOST or 0.0.0.0")
    serving.add_argument("--port", type=int, help="default: $PORT or 9090")
    serving.set_defaults(handler=serve)

    connecting = commands.add_parser("connect", help=connect.__doc__, description=connect.__doc__)
    connecting.add_argument("--project", type=int, help="an existing project (default: create one)")
    connecting.add_argument("--title", default="Preference comparisons (HyPER)")
    connecting.add_argument(
        "--backend-url",
        default="http://localhost:9090",
        help="where Label Studio reaches this backend",
    )
    connecting.add_argument(
        "--label-config",
        metavar="FILE|NAME",
        default="preference_5point",
        help="a config file, or the name of a shipped one: preference_5point (default; "
        "MultiPref's 5-point scale) or preference_3way (A, B, tie)",
    )
    connecting.set_defaults(handler=connect)

    showing = commands.add_parser("status", help=status.__doc__, description=status.__doc__)
    showing.add_argument("--project", type=int, required=True)
    showing.add_argument("--backend-url", default="http://localhost:9090")
    showing.set_defaults(handler=status)

    exporting = commands.add_parser(
        "export",
        help=export.__doc__,
        description=export.__doc__
        + " Run it where the backend keeps its state (its MODEL_DIR or DATABASE_URL).",
    )
    exporting.add_argument("--project", type=int, required=True)
    exporting.add_argument("--out", type=Path, required=True, help="the JSONL file to write")
    exporting.add_argument(
        "--format",
        choices=["pairs", "trl"],
        default="pairs",
        help="pairs: the HyPER pairs format (fit and route read it) with each label's "
        "provenance, every task (null label until it has one); trl: prompt/chosen/rejected "
        "for TRL's reward and DPO trainers, ties and unlabelled tasks left out",
    )
    exporting.set_defaults(handler=export)

    estimating = commands.add_parser(
        "estimate", help=estimate.__doc__, description=estimate.__doc__
    )
    estimating.add_argument("input", type=Path, metavar="INPUT.jsonl")
    estimating.add_argument(
        "--judges",
        nargs="+",
        metavar="[PROVIDER:]MODEL",
        help="the panel, primary first (default: the configured one, HYPER_JUDGES or "
        "HYPER_JUDGE_MODEL); claude-* models are Anthropic's unless a provider is named",
    )
    estimating.add_argument(
        "--latency-s",
        type=float,
        default=3.0,
        help="seconds one judge call takes (default 3, a typical API answer)",
    )
    estimating.add_argument(
        "--concurrency",
        type=positive_int,
        help="LM requests in flight (default: HYPER_JUDGE_CONCURRENCY)",
    )
    estimating.add_argument(
        "--output-tokens",
        type=positive_int,
        default=80,
        help="output tokens per judge call (default 80: a short rationale and the verdict)",
    )
    estimating.add_argument(
        "--batch-hours",
        type=float,
        default=1.0,
        help="a Message Batch's turnaround (default 1: most end within the hour, all in 24)",
    )
    estimating.set_defaults(handler=estimate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = " ".join(["hyper-ls", *argv])
    handler: Callable[[argparse.Namespace], None] = args.handler
    try:
        handler(args)
    except (UsageProblem, DatasetError, ValueError, OSError) as error:
        err.print(f"[bold red]error:[/] {escape(describe_error(error))}", soft_wrap=True)
        return 2
    return 0


def describe_error(error: Exception) -> str:
    """The message a user sees: an OS error as "PATH: what went wrong", not "[Errno 2] ..."."""
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror.lower()}"
    return str(error)


def show_simulation(outcome: dict) -> None:
    table = Table(title=f"judge error rate {outcome['judge_error_rate']:.1%}")
    for column in (
        "strategy",
        "budget",
        "human share",
        "capture x random (95% CI)",
        "label accuracy",
        "proxy RM accuracy",
    ):
        table.add_column(column)
    for row in outcome["results"]:
        low, high = row["capture_ratio_ci95"]
        table.add_row(
            escape(row["strategy"]),  # hyper[gpm] is not markup
            f"{row['budget']:.2f}",
            f"{row['human_share']:.2f}",
            f"{row['capture_ratio']['mean']:.2f} ± {row['capture_ratio']['std']:.2f} "
            f"({low:.2f}-{high:.2f})",
            f"{row['label_accuracy']['mean']:.3f} ± {row['label_accuracy']['std']:.3f}",
            f"{row['downstream_accuracy']['mean']:.3f} ± {row['downstream_accuracy']['std']:.3f}",
        )
    Console().print(table)


def show_transfer(outcome: dict) -> None:
    table = Table(title="leave one dataset out: capture x random (95% CI) / label accuracy")
    for column in (
        "held out",
        "judges",
        "budget",
        *dict.fromkeys(r["strategy"] for r in outcome["rows"]),
    ):
        table.add_column(column)
    cells: dict[tuple[str, str, float], list[str]] = {}
    for row in outcome["rows"]:
        low, high = row["capture_ratio_ci95"]
        cells.setdefault((row["dataset"], row["view"], row["budget"]), []).append(
            f"{row['capture_ratio']['mean']:.2f} ({low:.2f}-{high:.2f}) / "
            f"{row['label_accuracy']['mean']:.3f}"
        )
    for (dataset, view, budget), values in cells.items():
        table.add_row(dataset, view, f"{budget:.2f}", *values)
    Console().print(table)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
