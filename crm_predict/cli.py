"""The ``crm-predict`` command line: a thin shell over the packages, one sub-command per job."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console

from crm_predict.core.errors import UserError, print_error, user_errors_exit_2
from crm_predict.core.settings import Settings
from crm_predict.crm_store.export_cli import export_app
from crm_predict.features.cli import app as features_app
from crm_predict.features.cli import counts_table
from crm_predict.registry.cli import app as registry_app
from crm_predict.registry.cli import top_level as registry_top_level
from crm_predict.rules_cli import rules_app
from crm_predict.serving.batch_cli import batch_app
from crm_predict.serving.cli import app as serving_app
from crm_predict.training.cli import app as training_app

console = Console()
app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(
    features_app, name="features", help="Feast feature store: export, apply, materialize."
)
app.add_typer(
    registry_app, name="registry", help="Model registry: list, compare, promote, rollback."
)
app.registered_commands += training_app.registered_commands
app.registered_commands += serving_app.registered_commands
app.add_typer(batch_app, name="batch", help="Nightly batch scoring: tags, tasks, prediction log.")
app.registered_commands += registry_top_level.registered_commands  # retrain
app.add_typer(
    export_app, name="export", help="Tags, tasks, prediction log as CSV with external ids."
)
app.add_typer(rules_app, name="rules", help="Business rules file: check, show.")


@app.callback()
def _root(
    ctx: typer.Context,
    data_dir: Path = typer.Option(None, help="Override CRM_PREDICT_DATA_DIR."),
) -> None:
    # MLflow draws a progress bar for every artifact download (a model card, a champion): noise
    # in ordinary commands; a user who wants the bars sets the variable.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    settings = Settings() if data_dir is None else Settings(data_dir=data_dir)
    settings.ensure_dirs()
    ctx.obj = settings


@app.command("init-db")
def init_db(ctx: typer.Context) -> None:
    """Create or upgrade the CRM store schema (Alembic)."""
    from crm_predict.crm_store.db import make_engine, upgrade

    upgrade(make_engine(ctx.obj.crm_url))
    console.print(f"CRM store ready at [bold]{ctx.obj.crm_url}[/]")


@app.command("summary")
def summary(ctx: typer.Context) -> None:
    """Row counts per CRM table."""
    from crm_predict.crm_store.db import store_session
    from crm_predict.crm_store.repository import counts

    with store_session(ctx.obj.crm_url) as session:
        print_counts(counts(session))


@app.command("report")
def report(
    ctx: typer.Context,
    out: Path | None = typer.Option(
        None, help="Directory for report.html and charts/ (default: <data dir>/reports)."
    ),
    as_of: datetime | None = typer.Option(
        None, help="KPI date (default: newest data in the store)."
    ),
) -> None:
    """HTML report: funnel, sales cycle, CAC/LTV, channel ROI, owners, forecast, model quality."""
    from crm_predict.crm_store.db import store_session
    from crm_predict.serving.report import write_report

    settings: Settings = ctx.obj
    out = out or settings.data_dir / "reports"
    out.mkdir(parents=True, exist_ok=True)
    with store_session(settings.crm_url) as session:
        path = write_report(session, settings.mlflow_client(), settings, out, as_of)
    console.print(f"Report written to [bold]{path}[/]")


@app.command("demo-data")
@user_errors_exit_2
def demo_data(
    ctx: typer.Context,
    customers: int = typer.Option(
        10_000, "--customers", help="B2C customers (leads ≈ 0.3×, deals ≈ 0.1×)."
    ),
    seed: int | None = typer.Option(None, help="Random seed (default: CRM_PREDICT_SEED)."),
    as_of: datetime = typer.Option("2026-06-30", formats=["%Y-%m-%d"], help="Last day of history."),
    replace: bool = typer.Option(False, "--replace", help="Delete everything in the store first."),
) -> None:
    """Fill the CRM store with seeded demo data and save its ground truth (demo_truth/*.parquet)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from crm_predict.crm_store.bulk import clear_store, store_is_empty
    from crm_predict.crm_store.db import store_session
    from crm_predict.crm_store.demo import generate_demo

    settings: Settings = ctx.obj
    columns = (TextColumn("{task.description:<20}"), BarColumn(), TimeElapsedColumn())
    with (
        store_session(settings.crm_url) as session,
        Progress(*columns, console=console) as bar,
    ):
        if not store_is_empty(session):
            if not replace:
                raise UserError(
                    f"the CRM store at {settings.crm_url} is not empty; "
                    "add --replace to delete its contents first"
                )
            clear_store(session)
        task = bar.add_task("demo data", total=1.0)
        counts = generate_demo(
            session, settings, customers, as_of=as_of, seed=seed,
            progress=lambda step, done: bar.update(task, description=step, completed=done),
        )  # fmt: skip
        session.commit()
    print_counts(counts)
    console.print(f"Ground truth in [bold]{settings.demo_truth_dir}[/]")


@app.command("import")
@user_errors_exit_2
def import_file(
    ctx: typer.Context,
    args: list[str] = typer.Argument(
        None,
        help="ENTITY FILE (a CSV in the store's column names), or with --mapping the DIR holding "
        "the mapping's files (default: the current directory).",
    ),
    mapping: str | None = typer.Option(
        None,
        "--mapping",
        help="Mapping YAML, or a preset: hubspot, salesforce, demo. Every file it names is "
        "imported in one transaction.",
    ),
) -> None:
    """Import CSV files (all rows or none; re-importing the same files changes nothing)."""
    from crm_predict.crm_store.db import store_session
    from crm_predict.crm_store.importer import import_csv, import_directory
    from crm_predict.crm_store.mapping import load_mapping

    args = args or []
    if mapping is None and len(args) != 2:
        raise UserError(
            "give ENTITY FILE, or --mapping MAPPING [DIR] (see crm-predict import --help)"
        )
    if mapping is not None and len(args) > 1:
        raise UserError(f"with --mapping give at most one directory (got {len(args)} arguments)")
    with store_session(ctx.obj.crm_url) as session:
        if mapping is None:
            results = [import_csv(session, args[0], Path(args[1]))]
        else:
            results = import_directory(
                session, load_mapping(mapping), Path(args[0] if args else ".")
            )
        session.commit()
    for result in results:
        console.print(result.describe())


def print_counts(table_counts: dict[str, int]) -> None:
    console.print(counts_table("CRM store", table_counts, "table"))


@app.command("quickstart")
def quickstart(
    ctx: typer.Context,
    customers: int = typer.Option(20_000, help="Demo CRM size (B2C customers)."),
    seed: int | None = typer.Option(None, help="Random seed (default: CRM_PREDICT_SEED)."),
) -> None:
    """Demo CRM, features, five models trained + registered + promoted, batch write-back, report."""
    import time

    from crm_predict.quickstart import run_quickstart

    settings: Settings = ctx.obj
    command = typer.main.get_command(app)

    def invoke(args) -> None:
        # The same commands a user types, in this process; --data-dir keeps every step on one store.
        command.main(["--data-dir", str(settings.data_dir), *args], standalone_mode=False)

    started = time.perf_counter()
    table = run_quickstart(invoke, settings.mlflow_client(), console, customers, seed)
    console.rule("done")
    console.print(table)
    console.print(f"Quickstart finished in {time.perf_counter() - started:.0f} s.")
    console.print(f"CRM store: {settings.crm_url}\nMLflow:    {settings.tracking_uri}")
    console.print(
        "Serve the champions:  export CRM_PREDICT_API_TOKEN=$(openssl rand -hex 32)\n"
        "                      .venv/bin/crm-predict serve\n"
        "Then try:  curl -s -X POST http://127.0.0.1:3000/lead_score "
        "-H 'Content-Type: application/json' -d '{\"lead_id\": 1, \"explain\": true}'"
    )


def main() -> None:
    try:
        app()
    except UserError as exc:
        print_error(exc)
        raise SystemExit(2) from None
