"""``make quickstart``: the whole product on embedded defaults, one real CLI step after another.

Each step is the same command a user would type, run in-process so the quickstart proves the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table

from crm_predict.core.rules import MODEL_NAMES

# Every model the quickstart trains: the five tabular ones, then the message model (its readings
# become the batch's message tags and tasks).
TRAINED = (*MODEL_NAMES, "message_intent")
DEMO_AS_OF = "2026-06-30"


def data_steps(customers: int, seed: int | None = None) -> list[tuple[str, list[str]]]:
    """(title, CLI args): demo CRM → Parquet features → Feast registry → online store."""
    seed_args = ["--seed", str(seed)] if seed is not None else []
    demo = ["demo-data", "--customers", str(customers), "--as-of", DEMO_AS_OF, "--replace"]
    return [
        ("demo CRM", demo + seed_args),
        ("feature export", ["features", "export"]),
        ("feast apply", ["features", "apply"]),
        ("materialize", ["features", "materialize"]),
    ]


def run_quickstart(
    invoke: Callable[[Sequence[str]], None],
    client,
    console: Console,
    customers: int,
    seed: int | None = None,
) -> Table:
    """Run every step through ``invoke`` (the CLI), promote each model's first champion (only one
    that beats its baseline), score the CRM in batch with the models that have a champion, write
    the report, and return the model-quality table."""
    for title, args in data_steps(customers, seed):
        console.rule(title)
        invoke(args)
    served = []
    for model in TRAINED:
        console.rule(f"train {model}")
        invoke(["train", model])
        version = str(client.get_model_version_by_alias(model, "challenger").version)
        invoke(["registry", "card", model, version])
        if promote_first_champion(invoke, client, console, model, version):
            served.append(model)
    console.rule("nightly batch")
    skipped = [m for m in TRAINED if m not in served]
    if not served:
        console.print("[yellow]No model beats its baseline: no champion, nothing to score.[/]")
    else:
        if skipped:
            console.print(f"[yellow]No champion for {', '.join(skipped)}: not scored.[/]")
        invoke(["batch", "score", "--models", ",".join(served), "--at", f"{DEMO_AS_OF}T23:00:00"])
    console.rule("report")
    invoke(["report"])
    return quality_table(client)


def beats_baseline(client, model: str, version: str) -> tuple[bool, str]:
    """Whether the version's holdout metric beats the baseline its training run logged (see
    the model spec's ``quality``), and the two figures."""
    from crm_predict.training.specs import ALL_SPECS

    model_spec = ALL_SPECS[model]
    metric, baseline, _ = model_spec.quality
    metrics = client.get_run(client.get_model_version(model, version).run_id).data.metrics
    if metric not in metrics or baseline not in metrics:
        return False, f"{metric} or {baseline} not logged"
    mine, theirs = metrics[metric], metrics[baseline]
    better = mine < theirs if model_spec.lower_is_better else mine > theirs
    return bool(better), f"{metric} {mine:.4f} vs baseline {theirs:.4f}"


def promote_first_champion(
    invoke, client, console: Console, model: str, version: str, *, beat_baseline: bool = True
) -> bool:
    """Promote a version that beats its baseline through the gates; a model with no champion yet
    is promoted past a failing gate (the reason recorded), so the demo has something to serve.
    ``beat_baseline=False`` promotes regardless (benchmarks time every model). Returns whether the
    model has a champion afterwards."""
    from crm_predict.registry.lifecycle import CHAMPION, PromotionBlocked, version_for_alias

    current = version_for_alias(client, model, CHAMPION)
    better, figures = beats_baseline(client, model, version)
    if not better and beat_baseline:
        kept = f"champion stays v{current}" if current else "no champion, so it is not served"
        console.print(
            f"[yellow]{model} v{version} does not beat its baseline ({figures}): "
            f"not promoted; {kept}.[/]"
        )
        return current is not None
    try:
        invoke(["registry", "promote", model, version])
    except PromotionBlocked as blocked:
        failed = ", ".join(g.name for g in blocked.report.failed)
        if current is not None:
            console.print(
                f"[yellow]{model} v{version}: gates failed ({failed}); champion stays v{current}[/]"
            )
            return True
        verdict = "beats" if better else "does not beat"
        console.print(
            f"[yellow]{model} v{version} {verdict} its baseline ({figures}) but gates failed "
            f"({failed}); forcing first champion[/]"
        )
        reason = (
            f"quickstart bootstrap: first champion {verdict} its baseline ({figures}), "
            f"despite failed gates ({failed})"
        )
        invoke(["registry", "promote", model, version, "--force", "--reason", reason])
    return True


def quality_table(client) -> Table:
    """Model, champion version, holdout metric, baseline and oracle, read back from MLflow."""
    from crm_predict.registry.lifecycle import CHALLENGER, CHAMPION, version_for_alias
    from crm_predict.training.specs import ALL_SPECS

    table = Table(title="Models (champion, holdout)")
    for column in ("model", "version", "metric", "model", "baseline", "oracle"):
        table.add_column(column, justify="left" if column in ("model", "metric") else "right")
    for model, model_spec in ALL_SPECS.items():
        keys = model_spec.quality
        champion = version_for_alias(client, model, CHAMPION)
        shown = champion or version_for_alias(client, model, CHALLENGER)
        if shown is None:
            table.add_row(model, "none", keys[0], "—", "—", "—")
            continue
        metrics = client.get_run(client.get_model_version(model, shown).run_id).data.metrics
        values = [f"{metrics[k]:.3f}" if k in metrics else "—" for k in keys]
        label = shown if champion else f"none (challenger v{shown})"
        table.add_row(model, label, keys[0], *values)
    return table
