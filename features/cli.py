"""Commands of the features package (registered by crm_predict.cli as ``crm-predict features``)."""

from __future__ import annotations

from datetime import datetime

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from crm_predict.core.errors import UserError, iso_time
from crm_predict.core.settings import Settings

app = typer.Typer(no_args_is_help=True)
console = Console()


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings()
    settings.ensure_dirs()
    return settings


def _when(value: str | None, option: str) -> datetime | None:
    return iso_time(value, f"{option} must be an ISO date/time like 2026-06-30, got {{value!r}}")


def counts_table(title: str, counts: dict[str, int], what: str = "file / view") -> Table:
    """Rows per ``what`` (file, view, table) as a two-column table."""
    table = Table(title=title)
    table.add_column(what)
    table.add_column("rows", justify="right")
    for name, n in counts.items():
        table.add_row(name, f"{n:,}")
    return table


@app.command("export")
def export_cmd(
    ctx: typer.Context,
    as_of: str = typer.Option(None, help="Cut-off (default: the latest event in the CRM)."),
) -> None:
    """Export CRM tables to Parquet snapshots and compute the feature tables and labels."""
    from crm_predict.crm_store.db import make_engine, session_factory
    from crm_predict.features.export import export

    settings = _settings(ctx)
    engine = make_engine(settings.crm_url)
    try:
        with session_factory(engine)() as session, console.status("exporting") as status:
            counts = export(
                session, settings, as_of=_when(as_of, "--as-of"), progress=status.update
            )
    except Exception as exc:
        if isinstance(exc, UserError):
            raise
        if "no such table" in str(exc) or "does not exist" in str(exc):
            raise UserError(
                f"the CRM store at {settings.crm_url} has no schema: run `crm-predict init-db`"
            ) from None
        raise
    finally:
        engine.dispose()
    console.print(counts_table(f"Exported to {settings.feature_dir}", counts))


@app.command("apply")
def apply_cmd(ctx: typer.Context) -> None:
    """Register entities, feature views and FeatureServices in the Feast registry."""
    from crm_predict.features.definitions import SERVICES, service_name
    from crm_predict.features.export import export_as_of
    from crm_predict.features.store import apply

    settings = _settings(ctx)
    export_as_of(settings)  # a clear message when nothing has been exported yet
    with console.status("feast apply"):
        apply(settings)
    services = ", ".join(service_name(m) for m in SERVICES)
    console.print(f"Feast repo ready at [bold]{settings.feast_repo_dir}[/] ({services})")


@app.command("materialize")
def materialize_cmd(
    ctx: typer.Context,
    end: str = typer.Option(
        None, help="Materialize rows stamped up to this time (default: export cut-off)."
    ),  # fmt: skip
    start: str = typer.Option(None, help="Only rows stamped after this time."),
    view: list[str] = typer.Option(None, "--view", help="Feature view(s); default all."),
    stock: bool = typer.Option(
        False, help="Feast's own (slow) materialize instead of the bulk path."
    ),  # fmt: skip
) -> None:
    """Load the latest features per entity into the online store (SQLite or Redis)."""
    from crm_predict.features.export import export_as_of
    from crm_predict.features.materialize import materialize
    from crm_predict.features.store import feature_store

    settings = _settings(ctx)
    end_at = _when(end, "--end") or export_as_of(settings)
    store = feature_store(settings)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, int] = {}

        def report(name: str, total: int, done: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total or None)
            progress.update(tasks[name], completed=done, total=total or None)

        counts = materialize(
            store, end_at, start=_when(start, "--start"), views=view or None, stock=stock,
            progress=report,
        )  # fmt: skip
    console.print(counts_table(f"Online store ({settings.online_store}) up to {end_at}", counts))


@app.command("online")
def online_cmd(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Model name, e.g. churn."),
    entity_ids: list[int] = typer.Argument(..., help="Entity ids."),
) -> None:
    """Show a model's online features for some entities."""
    from crm_predict.features.online import online_features
    from crm_predict.features.store import feature_store

    frame = online_features(feature_store(_settings(ctx)), model, entity_ids)
    table = Table(title=f"{model} online features")
    table.add_column("feature")
    for i in frame["entity_id"]:
        table.add_column(str(i), justify="right")
    for column in frame.columns[1:]:
        table.add_row(column, *(str(v) for v in frame[column]))
    console.print(table)
