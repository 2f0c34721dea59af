"""Commands of the training package (registered by crm_predict.cli): ``train`` and ``predict``."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

import typer
from crm_predict.training.data_checks import parse_exclude

from crm_predict.core.errors import UserError, read_user_csv, user_errors_exit_2

app = typer.Typer(no_args_is_help=True)


def classifier_module(model: str) -> ModuleType:
    """``training.<model>`` for a classification model, else a clear error."""
    from crm_predict.training.specs import CLASSIFIERS, MODULES

    if model not in CLASSIFIERS:
        raise UserError(f"unknown model {model!r}; train/predict know: {', '.join(CLASSIFIERS)}")
    return MODULES[model]


def print_data_checks(console: Any, checks: Any) -> None:
    """The data checks as a table (column, check, value, action), or one line when all passed."""
    from rich.table import Table

    seconds = f"{checks.seconds:.2f} s on {checks.rows} training rows"
    excluded = f"; excluded: {', '.join(checks.excluded)}" if checks.excluded else ""
    if not checks.findings:
        console.print(
            f"data checks: all {len(checks.features)} features pass ({seconds}){excluded}"
        )
        return
    table = Table(title=f"data checks ({seconds}){excluded}")
    for name in ("column", "check", "value", "action"):
        table.add_column(name)
    for finding in checks.findings:
        table.add_row(finding.column, finding.check, finding.value, finding.action)
    console.print(table)


def print_model_choice(console: Any, result: Any) -> None:
    """How the candidate was chosen: per candidate the time-ordered CV AUC mean ± std (or the
    validation AUC), then the holdout AUC beside the two untuned sklearn models."""
    from rich.table import Table

    metrics = result.metrics
    names = [k.removeprefix("val_auc_") for k in metrics if k.startswith("val_auc_")]
    folds = int(metrics.get("cv_folds", 0))
    how = f"time-ordered CV, {folds} folds" if folds else "one validation split"
    table = Table(title=f"model choice ({how})")
    for column in ("candidate", "CV AUC mean ± std" if folds else "validation AUC", ""):
        table.add_column(column)
    for name in names:
        if folds and f"cv_auc_mean_{name}" in metrics:
            score = f"{metrics[f'cv_auc_mean_{name}']:.3f} ± {metrics[f'cv_auc_std_{name}']:.3f}"
        else:
            score = f"{metrics[f'val_auc_{name}']:.3f}"
        table.add_row(name, score, "chosen" if name == result.candidate else "")
    console.print(table)
    baselines = {
        "LogisticRegression()": metrics.get("holdout_auc_baseline_logreg"),
        "HistGradientBoostingClassifier()": metrics.get("holdout_auc_baseline_hgb"),
    }
    shown = [f"{name} {auc:.3f}" for name, auc in baselines.items() if auc is not None]
    if shown and "auc" in metrics:
        console.print(f"holdout AUC: {result.candidate} {metrics['auc']:.3f} vs {', '.join(shown)}")


def _for(model: str, help: str, default: Any = None) -> Any:
    """An option of one model's own, shown in that model's help panel."""
    return typer.Option(default, help=help, rich_help_panel=model)


@app.command("train")
@user_errors_exit_2
def train(
    ctx: typer.Context,
    model: str = typer.Argument(
        ..., help="lead_scoring, deal_health, churn, clv, next_best_time or message_intent."
    ),
    csv: Path | None = typer.Option(
        None,
        help="Train on your own table (message_intent: labelled messages) instead of the demo.",
    ),
    target: str | None = typer.Option(None, help="Binary target column (yes/no, true/false, 1/0)."),
    id_column: str | None = typer.Option(None, "--id", help="Row id column (never a feature)."),
    time_column: str | None = typer.Option(
        None,
        "--time",
        help="Time column: the newest rows become the holdout (default: file order).",
    ),
    min_class_count: int | None = typer.Option(
        None, help="Minimum positives and negatives (default: settings.min_class_count)."
    ),
    allow_small_data: bool = typer.Option(False, help="Train even below the minimum class count."),
    exclude: str | None = typer.Option(
        None, help="Columns never to use as features, comma-separated: --exclude col,col."
    ),
    allow_leakage: bool = typer.Option(
        False, help="Train even when a column alone separates the labels (target leakage)."
    ),
    calibration: str = typer.Option("sigmoid", help="sigmoid or isotonic."),
    transactions: Path | None = _for(
        "clv", "clv: your transaction CSV instead of the demo CRM's orders."
    ),
    customer_col: str | None = _for("clv", "clv: customer id column."),
    date_col: str | None = _for("clv", "clv: purchase date column."),
    amount_col: str | None = _for("clv", "clv: amount column."),
    freq: str = _for("clv", "clv: count at most one purchase per day (D) or week (W).", "D"),
    penalizer: float | None = _for(
        "clv",
        "clv: L2 penalty (default: none, the MLE; a small one only if that does not converge).",
    ),
    events: Path | None = _for(
        "next_best_time",
        "next_best_time: your engagement-event CSV instead of the demo CRM's activities.",
    ),
    contact_col: str | None = _for("next_best_time", "Contact id column."),
    time_col: str | None = _for(
        "next_best_time",
        "Event time column (message_intent: the message's time; the newest are the holdout).",
    ),
    responded_col: str | None = _for(
        "next_best_time", "Outcome column (yes/no; empty = not outreach)."
    ),
    channel_col: str | None = _for("next_best_time", "Channel column."),
    segment_col: str | None = _for("next_best_time", "Segment column."),
    text_col: str | None = _for("message_intent", "message_intent --csv: the message text column."),
    label_col: str | None = _for(
        "message_intent",
        "message_intent --csv: the intent column (technical_consultation, quote_request, "
        "competitor_comparison, after_sales_support).",
    ),
    sentiment_col: str | None = _for(
        "message_intent",
        "message_intent --csv: the sentiment column (satisfied, complaining, hesitant; "
        "default: the VADER / SnowNLP reading).",
    ),
    messages: int = typer.Option(
        4000,
        min=50,
        help="message_intent: demo messages generated when the CRM store holds no labelled ones.",
        rich_help_panel="message_intent",
    ),
) -> None:
    """Train a model, evaluate it on the newest data and register it in MLflow."""
    from crm_predict.training.specs import MODULES, SPECS, TEXT_MODULES
    from rich.console import Console

    settings, console = ctx.obj, Console()
    text_options = {"--text-col": text_col, "--label-col": label_col, "--sentiment-col": sentiment_col}  # fmt: skip
    if model in TEXT_MODULES:
        other = {"--target": target, "--id": id_column, "--time": time_column, "--exclude": exclude,
                 "--transactions": transactions, "--events": events}  # fmt: skip
        if any(other.values()) or allow_leakage:
            raise UserError(
                f"{model} takes --csv with --text-col, --label-col [--sentiment-col] "
                f"[--time-col], not {', '.join(k for k, v in other.items() if v) or '--allow-leakage'}"
            )
        module = TEXT_MODULES[model]
        # The whole table is checked before the MLflow store is opened (a bad one writes nothing).
        data, source = module.training_data(
            settings, csv, text_col, label_col, sentiment_col, time_col, messages
        )
        result = module.train(
            settings.mlflow_client(), data, n_trials=settings.optuna_trials, seed=settings.seed,
            source=source,
        )  # fmt: skip
        figures = ", ".join(f"{k}={result.metrics[k]:.3f}" for k in module.MODEL.train_metrics if k in result.metrics)  # fmt: skip
        console.print(f"[bold]{model}[/] version {result.version} (run {result.run_id}): {figures}")
        return
    if any(text_options.values()):
        raise UserError(
            f"{', '.join(k for k, v in text_options.items() if v)} are for message_intent"
        )
    if model in SPECS and not SPECS[model].is_classifier:
        spec = SPECS[model]
        if exclude or allow_leakage:
            raise UserError(
                f"--exclude and --allow-leakage are for the classifiers; {model} reads fixed "
                "columns (the ones named by its own options), so there is nothing to exclude"
            )
        if csv or target or id_column or time_column:
            raise UserError(
                "--csv, --target, --id and --time are for the classifiers; "
                "clv takes --transactions, next_best_time --events"
            )
        # Each model's ``run_training`` takes the options named as its parameters.
        run = MODULES[model].run_training
        given = {
            "transactions_csv": transactions, "customer_col": customer_col, "date_col": date_col,
            "amount_col": amount_col, "freq": freq, "penalizer": penalizer, "events_csv": events,
            "contact_col": contact_col, "time_col": time_col, "responded_col": responded_col,
            "channel_col": channel_col, "segment_col": segment_col,
        }  # fmt: skip
        wanted = inspect.signature(run).parameters
        result = run(settings, settings.mlflow_client(), **{k: v for k, v in given.items() if k in wanted})  # fmt: skip
        if spec.train_note:
            console.print(spec.train_note(result))
        figures = ", ".join(f"{k}={result.metrics[k]:.4g}" for k in spec.train_metrics)
        console.print(f"[bold]{model}[/] version {result.model_version} (run {result.run_id}): {figures}")  # fmt: skip
        return
    module = classifier_module(model)
    options: dict[str, Any] = {
        "min_class_count": min_class_count, "allow_small_data": allow_small_data,
        "calibration": calibration, "exclude": parse_exclude(exclude), "allow_leakage": allow_leakage,
    }  # fmt: skip
    if csv is None:
        if target or id_column or time_column:
            raise UserError("--target, --id and --time go with --csv")
        from crm_predict.features.training import demo_training_set  # Feast: only when asked

        frame, truth = demo_training_set(settings, model)
        options |= {"truth": truth, "source": "demo"}
    else:
        if target is None or id_column is None:
            raise UserError("--csv needs --target COLUMN and --id COLUMN")
        frame = read_user_csv(csv)
        options |= {"target": target, "id_column": id_column, "time_column": time_column,
                    "source": f"csv:{csv.name}"}  # fmt: skip
    result = module.train(settings, settings.mlflow_client(), frame, **options)
    if result.data_checks is not None:
        print_data_checks(console, result.data_checks)
    print_model_choice(console, result)
    figures = ", ".join(f"{k}={result.metrics[k]:.3f}" for k in module.MODEL.train_metrics if k in result.metrics)  # fmt: skip
    console.print(f"[bold]{model}[/] version {result.version} ({result.candidate}, run {result.run_id}): {figures}")  # fmt: skip


@app.command("predict")
@user_errors_exit_2
def predict(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="lead_scoring, deal_health or churn."),
    csv: Path = typer.Option(..., help="Table with the model's feature columns (and the id)."),
    out: Path = typer.Option(
        ...,
        help="Where to write id, the probability (probability, p_win or p_churn) and the model's own columns.",
    ),
    version: int | None = typer.Option(None, help="Registered version (default: newest)."),
    alias: str | None = typer.Option(None, help="Registered alias, e.g. champion."),
) -> None:
    """Score a CSV with a registered classifier: id, probability and the tags it implies."""
    import pandas as pd
    from crm_predict.training.classifier import score_table
    from rich.console import Console

    settings = ctx.obj
    module = classifier_module(model)
    frame = read_user_csv(csv)
    scores, used = score_table(settings.mlflow_client(), model, frame, version, alias)
    # The probability under the API's name for it, the derived outputs under their tags' names.
    outputs = module.outputs(scores["score"])
    table = pd.concat(
        [scores.rename(columns={"score": module.MODEL.score_output}), outputs], axis=1
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    Console().print(f"{len(table)} rows scored with {model} version {used} → [bold]{out}[/]")
