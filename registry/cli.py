"""Commands of the registry package (registered by crm_predict.cli as ``crm-predict registry …``;
``retrain`` is also registered at the top level as ``crm-predict retrain``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from crm_predict.registry.gates import GateReport

    from crm_predict.core.settings import Settings

app = typer.Typer(no_args_is_help=True)
top_level = typer.Typer()  # commands crm_predict.cli adds at the top level
console = Console()


def _settings(ctx: typer.Context) -> Settings:
    from crm_predict.core.settings import Settings

    return ctx.obj if isinstance(ctx.obj, Settings) else Settings()


def _config(settings: Settings):
    from crm_predict.registry.gates import GateConfig
    from crm_predict.serving.latency import measure_serving_latency

    return GateConfig.from_settings(settings, latency_probe=measure_serving_latency)


def print_gates(report: GateReport) -> None:
    against = f"champion v{report.champion_version}" if report.champion_version else "no champion"
    table = Table(
        "gate", "result", "detail", title=f"Gates: {report.name} v{report.version} (vs {against})"
    )
    style = {"pass": "green", "FAIL": "red", "N/A": "dim"}
    for r in report.results:
        table.add_row(r.name, f"[{style[r.status]}]{r.status}[/]", r.detail)
    console.print(table)


@app.command("list")
def list_models(
    ctx: typer.Context,
    model: str | None = typer.Argument(None, help="Only this model (default: all)."),
) -> None:
    """Registered models with their versions, aliases and key metrics."""
    from crm_predict.registry.card import fmt_metric
    from crm_predict.registry.evaluation import all_versions, key_metrics

    from crm_predict.core.errors import UserError

    client = _settings(ctx).mlflow_client()
    names = [model] if model else sorted(m.name for m in client.search_registered_models())
    if not names:
        raise UserError("no registered models yet: train one first")
    for name in names:
        metrics = list(key_metrics(name))
        table = Table("version", "aliases", "created (UTC)", *metrics, "run", title=name)
        for info in reversed(all_versions(client, name)):
            created = datetime.fromtimestamp(info.creation_timestamp / 1000, UTC)
            table.add_row(
                info.version,
                ", ".join(info.aliases),
                f"{created:%Y-%m-%d %H:%M}",
                *(fmt_metric(info.metrics.get(m, float("nan"))) for m in metrics),
                info.run_id[:8],
            )
        console.print(table)


@app.command("compare")
def compare(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Registered model name."),
    versions: list[str] | None = typer.Argument(
        None, help="Versions to compare (default: champion and challenger)."
    ),
    rows: str = typer.Option(
        "newest", help="Holdout rows: newest (the newest version's), intersection or union."
    ),
    log: bool = typer.Option(True, help="Log the table and plot as an MLflow run."),
) -> None:
    """Evaluate versions side by side on the same holdout rows."""
    from crm_predict.registry.card import fmt_metric
    from crm_predict.registry.compare import compare_versions, log_comparison

    client = _settings(ctx).mlflow_client()
    comparison = compare_versions(client, model, versions or None, rows)
    where = f"{comparison.n_rows} rows, {comparison.rows}" if comparison.n_rows else comparison.rows
    table = Table(*comparison.table.columns, title=f"{model}: {where}")
    for record in comparison.table.itertuples(index=False):
        table.add_row(*(fmt_metric(v) for v in record))
    console.print(table)
    if log:
        run_id = log_comparison(client, comparison)
        console.print(f"logged as run {run_id} (experiment registry-{model})")


@app.command("gates")
def gates(
    ctx: typer.Context,
    model: str = typer.Argument(...),
    version: str = typer.Argument(...),
) -> None:
    """Show every promotion gate for a version without promoting it."""
    from crm_predict.registry.gates import check_gates

    settings = _settings(ctx)
    print_gates(check_gates(settings.mlflow_client(), model, version, _config(settings)))


@app.command("promote")
def promote(
    ctx: typer.Context,
    model: str = typer.Argument(...),
    version: str = typer.Argument(...),
    force: bool = typer.Option(False, help="Promote even if gates fail (needs --reason)."),
    reason: str | None = typer.Option(None, help="Why; recorded with the promotion."),
    by: str | None = typer.Option(None, help="Who promotes (default: the OS user)."),
) -> None:
    """Move alias champion to a version after the gates pass."""
    from crm_predict.registry.lifecycle import PromotionBlocked
    from crm_predict.registry.lifecycle import promote as promote_version

    settings = _settings(ctx)
    try:
        event, report = promote_version(
            settings.mlflow_client(),
            model,
            version,
            _config(settings),
            force=force,
            reason=reason,
            by=by,
        )
    except PromotionBlocked as exc:
        print_gates(exc.report)
        raise
    print_gates(report)
    forced = ""
    if event.forced_gates:
        forced = f" [yellow](forced past {', '.join(event.forced_gates)})[/]"
    console.print(
        f"[bold]{model}[/] champion → v{event.version} (was {event.previous or 'none'}) "
        f"by {event.by} at {event.at}{forced}"
    )


@app.command("rollback")
def rollback(
    ctx: typer.Context,
    model: str = typer.Argument(...),
    reason: str | None = typer.Option(None, help="Why; recorded with the rollback."),
    by: str | None = typer.Option(None, help="Who rolls back (default: the OS user)."),
) -> None:
    """Point champion back at the version it replaced."""
    from crm_predict.registry.lifecycle import rollback as rollback_champion

    event = rollback_champion(_settings(ctx).mlflow_client(), model, reason=reason, by=by)
    console.print(
        f"[bold]{model}[/] champion → v{event.version} (rolled back from v{event.previous})"
    )


@app.command("challenger")
def challenger(
    ctx: typer.Context,
    model: str = typer.Argument(...),
    version: str = typer.Argument(...),
) -> None:
    """Mark a version as challenger (training does this for every new version)."""
    from crm_predict.registry.lifecycle import on_new_version

    on_new_version(_settings(ctx).mlflow_client(), model, version)
    console.print(f"[bold]{model}[/] challenger → v{version}")


@app.command("card")
def card(
    ctx: typer.Context,
    model: str = typer.Argument(...),
    version: str = typer.Argument(...),
    out: Path | None = typer.Option(None, help="Also write the Markdown to this file."),
) -> None:
    """Write the model card (artifact model_card.md + version description)."""
    from crm_predict.registry.card import write_model_card

    settings = _settings(ctx)
    text = write_model_card(settings.mlflow_client(), model, version, _config(settings))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    written = f" and written to {out}" if out else ""
    console.print(f"model card of [bold]{model}[/] v{version} logged{written}")


@app.command("resolve")
def resolve(
    ctx: typer.Context,
    model: str = typer.Argument(...),
    segment: str | None = typer.Option(None, help="Segment/tenant: model '<model>__<segment>'."),
    alias: str = typer.Option("champion"),
) -> None:
    """Which model serves a segment: its own, or the global fallback."""
    from crm_predict.registry.lifecycle import resolve_model

    settings = _settings(ctx)
    choice = resolve_model(
        settings.mlflow_client(),
        model,
        segment,
        alias=alias,
        min_class_count=settings.min_class_count,
    )
    console.print(
        f"{choice.name} v{choice.version} ({choice.alias})"
        + (f" — fallback: {choice.reason}" if choice.fallback else "")
    )


@app.command("drift")
def drift(
    ctx: typer.Context,
    model: str = typer.Argument(...),
    data: Path | None = typer.Option(
        None, help="CSV/Parquet of current rows (default: the scoring frame now)."
    ),
    at: datetime | None = typer.Option(None, help="'Now' for the scoring frame (naive UTC)."),
    version: str | None = typer.Option(None, help="Version (default: champion, else newest)."),
    log: bool = typer.Option(True, help="Log the PSI table as an MLflow run."),
) -> None:
    """PSI per feature between the training window and the newest data; flags PSI > 0.2."""
    from crm_predict.registry.drift import drift_report

    settings = _settings(ctx)
    threshold = _config(settings).psi_threshold
    report = drift_report(
        settings, settings.mlflow_client(), model, data=data, at=at, version=version,
        threshold=threshold, log=log,
    )  # fmt: skip
    table = Table(
        "feature", "PSI", "flag", title=f"Drift: {model} v{report.version} vs {report.source}"
    )
    for feature, value, flagged in report.table.itertuples(index=False):
        table.add_row(feature, f"{value:.3f}", "[red]drift[/]" if flagged else "")
    console.print(table)
    if report.run_id:
        console.print(f"logged as run {report.run_id} (experiment registry-{model})")


def retrain(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="lead_scoring, deal_health or churn."),
    data: Path | None = typer.Option(
        None, help="Training table (CSV/Parquet, training-set shape); default: the demo CRM."
    ),
) -> None:
    """Train a new challenger, run the gates, promote only if auto_promote and all pass."""
    from crm_predict.registry.retrain import retrain as retrain_model

    settings = _settings(ctx)
    result = retrain_model(settings, settings.mlflow_client(), model, _config(settings), data=data)
    print_gates(result.report)
    if result.promoted:
        console.print(f"[bold]{model}[/] v{result.version} promoted to champion")
    else:
        why = "gates failed" if not result.report.passed else "auto_promote is off"
        console.print(f"[bold]{model}[/] v{result.version} is challenger ({why})")


app.command("retrain")(retrain)
top_level.command("retrain")(retrain)
