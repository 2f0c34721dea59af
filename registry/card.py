"""Model cards: a Markdown artifact ``model_card.md`` on the version's run, mirrored (up to the
registry's 5,000-character limit) into the model version's description."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crm_predict.registry.evaluation import (
    MODEL_CARD_ARTIFACT,
    VersionInfo,
    get_version,
    is_classifier,
    load_holdout,
    model_spec,
    score_version,
)

from crm_predict.core.errors import UserError

if TYPE_CHECKING:
    import pandas as pd
    from crm_predict.registry.gates import GateConfig, GateResult
    from mlflow import MlflowClient

DESCRIPTION_LIMIT = 5000  # model_versions.description is VARCHAR(5000) in MLflow's SQL store

GENERIC_LIMITS = (
    "Scores describe the CRM history of the training window; a change in sales process, pricing "
    "or data entry makes them drift (see `crm-predict registry drift`).",
    "Probabilities are calibrated on the holdout period; check calibration again after retraining.",
)


def fmt_metric(value: object) -> str:
    """A metric as the card and the CLI tables show it: 3 decimals, "—" when absent or NaN."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render_model_card(
    info: VersionInfo,
    fairness: list[GateResult],
    holdout_rows: int | None,
) -> str:
    """The card as Markdown, from the run's logged metadata and the fairness checks."""
    spec = model_spec(info.name)
    tags, metrics = info.tags, info.metrics
    counts = info.train_counts()
    size = (
        f"{counts[0] + counts[1]:,} rows ({counts[0]:,} positives, {counts[1]:,} negatives)"
        if counts
        else (f"{int(metrics['n_train']):,} rows" if "n_train" in metrics else "not logged")
    )
    lines = [
        f"# Model card: {info.name} v{info.version}",
        "",
        f"- Run: `{info.run_id}`",
        f"- Aliases: {', '.join(info.aliases) or 'none'}",
        "",
        "## Purpose",
        spec.purpose if spec else f"Model {info.name}.",
        "",
        "## Training data",
        f"- Window: {tags.get('data_window', 'not logged')}",
        f"- Entity: {tags.get('entity', 'not logged')}",
        f"- Training size: {size}",
        f"- Holdout rows: {holdout_rows if holdout_rows is not None else 'no holdout artifact'}",
        "",
        "## Features",
        f"FeatureService `{tags.get('feature_service', 'not logged')}`:",
        "",
        *[f"- `{f}`" for f in info.feature_names],
        "",
        "## Metrics on the holdout",
        "| metric | model | baseline | oracle |",
        "|---|---|---|---|",
    ]
    for metric, baseline, oracle in spec.card_metrics if spec else ():
        if metric in metrics:
            lines.append(
                f"| {metric} | {fmt_metric(metrics[metric])} | {fmt_metric(metrics.get(baseline or ''))} "
                f"| {fmt_metric(metrics.get(oracle or ''))} |"
            )
    lines += spec.card_lines(info.params, info.tags) if spec and spec.card_lines else []
    lines += ["", "## Calibration"]
    if "brier" in metrics or "ece" in metrics:
        lines.append(
            f"Brier score {fmt_metric(metrics.get('brier'))}, expected calibration error (10 bins) "
            f"{fmt_metric(metrics.get('ece'))} on the holdout."
        )
        if "brier_uncalibrated" in metrics:
            lines.append(
                f"Before calibration: Brier {fmt_metric(metrics['brier_uncalibrated'])}, "
                f"ECE {fmt_metric(metrics.get('ece_uncalibrated'))}."
            )
    else:
        lines.append("Not applicable or not logged for this model.")
    lines += ["", "## Fairness checks", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {r.name} | {r.status} | {r.detail} |" for r in fairness]
    lines += ["", "## Known limits"]
    lines += [f"- {text}" for text in (spec.known_limits if spec else "", *GENERIC_LIMITS) if text]
    lines += ["", "## Promotion"]
    vt = info.version_tags
    if "promoted_at" in vt:
        lines.append(f"Promoted to champion by {vt.get('promoted_by')} at {vt['promoted_at']} UTC.")
        lines.append(f"- Previous champion: {vt.get('previous_champion', 'none')}")
        if vt.get("promotion_forced") == "true":
            lines.append(
                f"- Forced past failing gates {vt.get('promotion_forced_gates')}: "
                f"{vt.get('promotion_reason')}"
            )
    else:
        lines.append("Not promoted yet.")
    return "\n".join(lines) + "\n"


def write_model_card(
    client: MlflowClient, name: str, version: str | int, config: GateConfig | None = None
) -> str:
    """Render the card of ``name`` v``version``, log it as ``model_card.md`` and set it as the
    version's description. Returns the Markdown."""
    from crm_predict.registry.gates import (
        GateConfig,
        fairness_results,
        gate_protected_not_a_feature,
    )
    from mlflow.exceptions import MlflowException

    config = config or GateConfig()
    info = get_version(client, name, version)
    holdout: pd.DataFrame | None
    try:
        holdout = load_holdout(client, info.run_id)
    except (UserError, MlflowException):
        holdout = None
    p = None
    if holdout is not None and is_classifier(name):
        p = score_version(client, info, holdout)
    fairness = fairness_results(info, holdout, p, config)
    fairness.append(gate_protected_not_a_feature(info.feature_names, config))
    card = render_model_card(info, fairness, None if holdout is None else len(holdout))
    client.log_text(info.run_id, card, MODEL_CARD_ARTIFACT)
    description = card
    if len(description) > DESCRIPTION_LIMIT:
        note = f"\n… (truncated; full card: artifact {MODEL_CARD_ARTIFACT})\n"
        description = description[: DESCRIPTION_LIMIT - len(note)] + note
    client.update_model_version(name, info.version, description=description)
    return card
