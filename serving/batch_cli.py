"""``crm-predict batch …``: the nightly scoring job (registered by ``crm_predict.cli``)."""

from __future__ import annotations

from datetime import datetime

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from crm_predict.core.errors import UserError, iso_time
from crm_predict.core.rules import MODEL_NAMES

console = Console()
ENGINES = ("single", "spark")
MESSAGES = "message_intent"  # read on this machine after the tabular models, on either engine
BATCH_MODELS = (*MODEL_NAMES, MESSAGES)
batch_app = typer.Typer(no_args_is_help=True, help="Nightly batch scoring and write-back.")


def parse_models(value: str | None) -> list[str]:
    """'churn,clv' → ['churn', 'clv'] in the order of BATCH_MODELS; None → all of them."""
    if not value:
        return list(BATCH_MODELS)
    wanted = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in BATCH_MODELS]
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(BATCH_MODELS)}")
    return [m for m in BATCH_MODELS if m in wanted]


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO date/time option as naive local time (an offset is converted)."""
    stamp = iso_time(value, f"{option} {{value!r}} is not an ISO date/time (e.g. 2026-06-30T02:00)")
    if stamp is None or stamp.tzinfo is None:
        return stamp
    return stamp.astimezone(None).replace(tzinfo=None)


def summary_table(summary) -> Table:
    """Counts per tag value, tasks created and seconds per stage, one block per model."""
    table = Table(
        title=f"Batch run {summary.batch_run_id} as of {summary.scored_at:%Y-%m-%d %H:%M}"
    )
    for column in ("model", "version", "entities", "tag=value / stage", "count / s"):
        table.add_column(column, justify="right" if column in ("entities", "count / s") else "left")
    for m in summary.models:
        table.add_row(m.name, m.version, f"{m.entities:,}", "", "", end_section=False)
        for key, n in sorted(m.result.tag_counts.items()):
            table.add_row("", "", "", key, f"{n:,}")
        for kind, n in sorted(m.result.task_counts.items()):
            table.add_row("", "", "", f"task {kind} (due)", f"{n:,}")
        table.add_row("", "", "", "tasks created", f"{m.result.tasks_created:,}")
        for stage, seconds in m.seconds.items():
            table.add_row("", "", "", f"seconds {stage}", f"{seconds:.2f}", end_section=stage == list(m.seconds)[-1])  # fmt: skip
    for stage, seconds in summary.seconds.items():
        table.add_row("run", "", "", f"seconds {stage}", f"{seconds:.2f}")
    table.add_row("total", "", "", f"tasks created {summary.tasks_created:,}", f"{summary.seconds_total:.2f}")  # fmt: skip
    return table


@batch_app.command("score")
def score_command(
    ctx: typer.Context,
    models: str = typer.Option(
        None,
        "--models",
        help="Comma-separated model names (default all: the five tabular models, and "
        "message_intent when it has a champion).",
    ),
    since: str = typer.Option(None, help="Only entities changed since this ISO date/time."),
    at: str = typer.Option(None, help="Score as of this ISO date/time (default now, UTC)."),
    quiet: bool = typer.Option(False, help="No progress bars."),
    export: bool = typer.Option(
        True,
        "--export/--no-export",
        help="Export a fresh CRM snapshot first (default), or reuse the latest one "
        "(`crm-predict features export`): much faster on a large store whose snapshot is recent.",
    ),
    engine: str = typer.Option(
        "single",
        "--engine",
        help="single: this machine (default); spark: features, scoring and write-back spread "
        "over a Spark cluster (needs Java and the `spark` extra).",
    ),
    master: str = typer.Option(
        None,
        "--master",
        help="Spark master with --engine spark: local[N] (default local[*]), spark://HOST:PORT, "
        "k8s://https://HOST:PORT or yarn.",
    ),
) -> None:
    """Score every active lead, open deal and customer with each champion; read the new inbound
    messages with message_intent's; write tags and tasks.

    Features are computed as of ``--at`` from the CRM snapshot under the data dir; the rule context
    (owners, idle days, spend windows) is always read live from the CRM store."""
    from crm_predict.crm_store.db import store_session
    from crm_predict.serving.batch import run_batch

    settings = ctx.obj
    names = parse_models(models)
    when, changed = parse_time(at, "--at"), parse_time(since, "--since")  # before any I/O
    if engine not in ENGINES:
        raise UserError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if master is not None and engine != "spark":
        raise UserError("--master is for --engine spark")
    if engine == "spark":
        from crm_predict.serving.batch_spark import check_engine

        check_engine(master := master or "local[*]")  # before MLflow's or the store's files
    client = settings.mlflow_client()
    names = _with_message_champion(client, names, explicit=bool(models))
    tabular = [m for m in names if m in MODEL_NAMES]
    columns = (TextColumn("{task.description:<15}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console, disable=quiet) as bars:

        def progress(model_name: str, total: int):
            task = bars.add_task(model_name, total=total)
            return lambda n: bars.advance(task, n)

        summary = None
        if tabular and engine == "spark":
            bars.stop()  # Spark's own progress stays off; the summary table says what was done
            summary = _spark_score(settings, client, tabular, when, changed, master, export)
        elif tabular:
            with store_session(settings.crm_url) as session:
                summary = run_batch(
                    session, client, settings, tabular, when, changed, progress=progress,
                    export=export,
                )  # fmt: skip
        if MESSAGES in names:
            from crm_predict.serving.batch_messages import run_message_batch

            rules = settings.load_rules() if summary is None else summary.rules
            with store_session(settings.crm_url) as session:
                read = run_message_batch(
                    session, client, settings, summary.scored_at if summary else when, rules,
                    progress=progress,
                )  # fmt: skip
    if summary is not None:
        _report(summary)
    if MESSAGES in names:
        console.print(message_table(read))


def _with_message_champion(client, names: list[str], explicit: bool) -> list[str]:
    """``names`` without message_intent when it has no champion: said and dropped by default,
    an error (before any write) when it was asked for."""
    from crm_predict.core.tracking import CHAMPION, version_for_alias

    if MESSAGES not in names:
        return names
    try:
        version = version_for_alias(client, MESSAGES, CHAMPION)
    except UserError:
        version = None
    if version is not None:
        return names
    missing = f"{MESSAGES} has no {CHAMPION!r} in the registry"
    if explicit:
        raise UserError(f"{missing}: train and promote it first (`crm-predict train {MESSAGES}`)")
    console.print(f"[yellow]{missing}: messages not read[/]")
    return [m for m in names if m != MESSAGES]


def message_table(read) -> Table:
    """What the message batch read and wrote."""
    table = Table(title=f"Messages read by {MESSAGES} v{read.model_version}")
    table.add_column("what")
    table.add_column("count / s", justify="right")
    rows = [
        ("messages read", read.messages_scored),
        ("unreadable", read.messages_unreadable),
        ("contacts tagged" + (" (all)" if read.contacts_full else ""), read.contacts_tagged),
        ("deals tagged", read.deals_tagged),
        ("tags written", read.tags_written),
        *((f"task {kind}", n) for kind, n in sorted(read.task_counts.items())),
        ("tasks created", read.tasks_created),
    ]
    for what, n in rows:
        table.add_row(what, f"{n:,}")
    table.add_row("seconds", f"{read.seconds_total:.2f}")
    return table


def _spark_score(settings, client, names, when, changed, master, export):
    """The Spark engine's run: the champions checked before the store is opened for writing."""
    from crm_predict.crm_store.db import store_session
    from crm_predict.serving.batch_spark import champions, run_spark_batch

    checked = champions(client, names)
    with store_session(settings.crm_url) as session, console.status(f"scoring on Spark ({master})"):
        return run_spark_batch(
            session, client, settings, names, when, changed, master=master, export=export,
            preflighted=checked,
        )  # fmt: skip


def _report(summary) -> None:
    console.print(summary_table(summary))
    assigned = summary.task_assignment
    console.print(
        f"rules: {summary.rules_file or 'built-in defaults'}; tasks without owner: "
        f"{assigned['default_owner']:,} to a region's default owner, {assigned['queue']:,} to the "
        f"queue {summary.rules.assignment.queue!r}"
    )
    for error in summary.rule_errors:
        console.print(f"[yellow]rule skipped:[/] {error}")
    if summary.resumed:
        console.print("[yellow]resumed[/] an interrupted run after its last committed chunk")
    console.print(f"MLflow run [bold]{summary.mlflow_run_id}[/] (experiment batch_scoring)")
