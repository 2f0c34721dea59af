"""``make quickstart``: the whole product on embedded defaults, one real CLI step after another.

Each step is the same command a user would type, run in-process so the quickstart proves the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from crm_predict.rules import MODEL_NAMES

DEMO_AS_OF = "2026-06-30"

# Per model: (holdout metric, baseline metric, oracle metric) as logged by training.
QUALITY_METRICS = {
    "lead_scoring": ("auc", "baseline_auc", "oracle_auc"),
    "deal_health": ("auc", "baseline_auc", "oracle_auc"),
    "churn": ("auc", "baseline_auc", "oracle_auc"),
    "clv": ("mae_purchases", "baseline_mae_purchases", "oracle_mae_purchases"),
    "next_best_time": ("hit_rate_top1", "baseline_hit_rate_top1", "oracle_hit_rate_top1"),
}


@dataclass(frozen=True)
class Step:
    title: str
    args: list[str]


def data_steps(customers: int, seed: int | None = None) -> list[Step]:
    """Demo CRM → Parquet features → Feast registry → online store."""
    seed_args = ["--seed", str(seed)] if seed is not None else []
    return [
        Step("demo CRM", ["demo-data", "--customers", str(customers), "--as-of", DEMO_AS_OF, "--replace", *seed_args]),
        Step("feature export", ["features", "export"]),
        Step("feast apply", ["features", "apply"]),
        Step("materialize", ["features", "materialize"]),
    ]  # fmt: skip


def run_quickstart(
    invoke: Callable[[Sequence[str]], None],
    client,
    console: Console,
    customers: int,
    seed: int | None = None,
) -> Table:
    """Run every step through ``invoke`` (the CLI), promote each model's first champion, score
    the CRM in batch, write the report, and return the model-quality table."""
    for step in data_steps(customers, seed):
        console.rule(step.title)
        invoke(step.args)
    for model in MODEL_NAMES:
        console.rule(f"train {model}")
        invoke(["train", model])
        version = str(client.get_model_version_by_alias(model, "challenger").version)
        invoke(["registry", "card", model, version])
        promote_first_champion(invoke, client, console, model, version)
    console.rule("nightly batch")
    invoke(["batch", "score", "--at", f"{DEMO_AS_OF}T23:00:00"])
    console.rule("report")
    invoke(["report"])
    return quality_table(client)


def promote_first_champion(invoke, client, console: Console, model: str, version: str) -> None:
    """Promote through the gates; a model with no champion yet is promoted even past a failing
    gate, with that recorded as the reason, so the demo always has something to serve."""
    from registry.lifecycle import PromotionBlocked

    try:
        invoke(["registry", "promote", model, version])
    except PromotionBlocked as blocked:
        failed = ", ".join(g.name for g in blocked.report.failed)
        console.print(
            f"[yellow]{model} v{version}: gates failed ({failed}); forcing first champion[/]"
        )
        reason = f"quickstart bootstrap: first champion despite failed gates ({failed})"
        invoke(["registry", "promote", model, version, "--force", "--reason", reason])


def quality_table(client) -> Table:
    """Model, champion version, holdout metric, baseline and oracle, read back from MLflow."""
    table = Table(title="Models (champion, holdout)")
    for column in ("model", "version", "metric", "model", "baseline", "oracle"):
        table.add_column(column, justify="left" if column in ("model", "metric") else "right")
    for model in MODEL_NAMES:
        version = client.get_model_version_by_alias(model, "champion")
        metrics = client.get_run(version.run_id).data.metrics
        keys = QUALITY_METRICS[model]
        values = [f"{metrics[k]:.3f}" if k in metrics else "—" for k in keys]
        table.add_row(model, str(version.version), keys[0], *values)
    return table
