"""Promotion gates: what a version must show before it may become ``champion``.

Every threshold lives in ``GateConfig`` (plain data, logged with the result). Each gate is a pure
function over numbers and frames, tested without MLflow; ``check_gates`` gathers their inputs for
one registered version. The disparate-impact gate judges at a run param ``decision_threshold``
when training logged one, else at the cut of the business rule that turns the score into an
action (``ModelSpec.decision_threshold``: lead grade A, deal not red, churn risk high).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from crm_predict.registry.evaluation import (
    MODEL_CARD_ARTIFACT,
    TRAIN_COUNT_METRICS,
    VersionInfo,
    base_model_name,
    get_version,
    has_artifact,
    is_classifier,
    key_metrics,
    load_holdout,
    score_version,
)
from crm_predict.training.specs import SPECS

from crm_predict.core.errors import UserError
from crm_predict.core.metrics import classification_metrics
from crm_predict.core.rules import RULES
from crm_predict.core.timing import Latency
from crm_predict.core.tracking import CHAMPION, version_for_alias

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from crm_predict.core.settings import Settings

# (client, name, version, holdout, *, rows, repeats, warmup, seed) -> ServingLatency
LatencyProbe = Callable[..., Any]

# Each classifier's own cut (its ``ModelSpec.decision_threshold``) under the default rules.
DEFAULT_DECISION_THRESHOLDS: dict[str, float] = {
    name: spec.decision_threshold(RULES)
    for name, spec in SPECS.items()
    if spec.decision_threshold is not None
}


@dataclass(frozen=True)
class GateConfig:
    """Every promotion threshold in one place."""

    # Gate 1: the challenger may trail the champion on the same holdout by at most these margins.
    auc_margin: float = 0.01
    brier_margin: float = 0.01
    ece_margin: float = 0.02
    # CLV / next-best-time: logged metrics may be at most this fraction worse.
    pyfunc_relative_margin: float = 0.05
    # Gate 2: positives and negatives each in the training data (design notes: 40 and 40).
    min_class_count: int = 40
    # Gate 3: four-fifths rule on positive-decision rates, and proxy features.
    disparate_impact_min: float = 0.8
    proxy_max_abs_corr: float = 0.5
    # Groups with fewer holdout rows give a rate too noisy to judge; they are reported, not gated.
    min_group_rows: int = 30
    protected_attribute: str = "gender"
    excluded_features: tuple[str, ...] = ("gender", "age_band")
    decision_thresholds: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_DECISION_THRESHOLDS)
    )
    # Drift: a feature whose PSI exceeds this is flagged.
    psi_threshold: float = 0.2
    # Predict latency: single-row p99 in CPU ms as the service scores (0 = not gated), and how
    # much to time: seeded holdout rows × repeats (median of repeats) after warm-up calls.
    predict_latency_budget_ms: float = 2.5
    explain_latency_budget_ms: float = 10.0
    latency_rows: int = 100
    latency_repeats: int = 3
    latency_warmup: int = 10
    latency_seed: int = 0
    # How a version is timed: ``crm_predict.serving.latency.measure_serving_latency`` (the
    # registry sits below serving, so the caller hands it in). None: the gate fails, unmeasured.
    latency_probe: LatencyProbe | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_settings(
        cls, settings: Settings, latency_probe: LatencyProbe | None = None
    ) -> GateConfig:
        """Defaults with the data/fairness settings a deployment may change."""
        return replace(
            cls(),
            latency_probe=latency_probe,
            min_class_count=settings.min_class_count,
            protected_attribute=settings.protected_attribute,
            excluded_features=tuple(settings.excluded_features),
            predict_latency_budget_ms=settings.predict_latency_budget_ms,
            explain_latency_budget_ms=settings.explain_latency_budget_ms,
            latency_seed=settings.seed,
        )

    def decision_threshold(self, info: VersionInfo) -> tuple[float, str]:
        """The score at or above which the model's action fires, and where that number came from."""
        if "decision_threshold" in info.params:
            return float(info.params["decision_threshold"]), "run param decision_threshold"
        base = base_model_name(info.name)
        if base not in self.decision_thresholds:
            raise UserError(f"no decision threshold configured for {info.name!r}")
        return self.decision_thresholds[base], f"default for {base}"

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "latency_probe"}


@dataclass(frozen=True)
class GateResult:
    """One gate's outcome. A gate whose input is absent (no protected attribute on the entity, no
    binary label) is not applicable: ``applicable=False``, ``passed=True`` (it never blocks), and
    ``detail`` gives the reason."""

    name: str
    passed: bool
    detail: str
    applicable: bool = True

    @property
    def status(self) -> str:
        """``pass``, ``FAIL`` or ``N/A``, as the gates table and the model card show it."""
        if not self.applicable:
            return "N/A"
        return "pass" if self.passed else "FAIL"


def not_applicable(name: str, reason: str) -> GateResult:
    """A gate that cannot be judged because its input is absent: shown N/A, never blocks."""
    return GateResult(name, True, f"not applicable: {reason}", applicable=False)


@dataclass
class GateReport:
    """The outcome of every gate for one version, in the order ``check_gates`` runs them."""

    name: str
    version: str
    champion_version: str | None
    results: list[GateResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[GateResult]:
        return [r for r in self.results if not r.passed]

    @property
    def not_applicable(self) -> list[GateResult]:
        return [r for r in self.results if not r.applicable]

    def failure_message(self) -> str:
        reasons = "; ".join(f"{r.name}: {r.detail}" for r in self.failed)
        return f"{self.name} v{self.version} failed gates — {reasons}"


# --- Pure gates ------------------------------------------------------------------------------


def gate_not_worse_classifier(
    candidate: dict[str, float], champion: dict[str, float] | None, config: GateConfig
) -> GateResult:
    """Gate 1 for classifiers: AUC, Brier and ECE on the same holdout rows, within margins."""
    name = "not_worse_than_champion"
    if champion is None:
        return GateResult(name, True, "no champion yet")
    if np.isnan(candidate["auc"]) or np.isnan(champion["auc"]):
        return GateResult(name, False, "AUC undefined on the holdout (one class only)")
    problems = []
    if candidate["auc"] < champion["auc"] - config.auc_margin:
        problems.append(
            f"AUC {candidate['auc']:.3f} < champion {champion['auc']:.3f} − {config.auc_margin}"
        )
    for metric, margin in (("brier", config.brier_margin), ("ece", config.ece_margin)):
        if candidate[metric] > champion[metric] + margin:
            problems.append(
                f"{metric} {candidate[metric]:.3f} > champion {champion[metric]:.3f} + {margin}"
            )
    if problems:
        return GateResult(name, False, "; ".join(problems))
    shown = (("AUC", "auc"), ("Brier", "brier"), ("ECE", "ece"))
    detail = ", ".join(f"{label} {candidate[m]:.3f} vs {champion[m]:.3f}" for label, m in shown)
    return GateResult(name, True, detail)


def gate_not_worse_logged(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    directions: dict[str, bool],
    config: GateConfig,
) -> GateResult:
    """Gate 1 for pyfuncs (CLV, next-best-time): their logged holdout metrics, within a margin."""
    name = "not_worse_than_champion"
    if champion is None:
        return GateResult(name, True, "no champion yet")
    shared = [m for m in directions if m in candidate and m in champion]
    if not shared:
        return GateResult(name, False, f"none of {', '.join(directions)} logged by both runs")
    rel = config.pyfunc_relative_margin
    problems, seen = [], []
    for metric in shared:
        new, old = candidate[metric], champion[metric]
        worse = new < old * (1 - rel) if directions[metric] else new > old * (1 + rel)
        (problems if worse else seen).append(f"{metric} {new:.3f} vs champion {old:.3f}")
    if problems:
        return GateResult(name, False, "; ".join(problems) + f" (allowed {rel:.0%} worse)")
    return GateResult(name, True, "; ".join(seen))


def gate_minimum_data(counts: tuple[int, int] | None, config: GateConfig) -> GateResult:
    """Gate 2: enough positives and negatives in the training data."""
    name = "minimum_data"
    if counts is None:
        return GateResult(
            name, False, f"training counts not logged (metrics {', '.join(TRAIN_COUNT_METRICS)})"
        )
    pos, neg = counts
    need = config.min_class_count
    if pos < need or neg < need:
        return GateResult(name, False, f"{pos} positives / {neg} negatives; need ≥ {need} of each")
    return GateResult(name, True, f"{pos} positives / {neg} negatives (≥ {need})")


def gate_disparate_impact(
    p: np.ndarray, groups: pd.Series, threshold: float, source: str, config: GateConfig
) -> GateResult:
    """Gate 3a: lowest / highest positive-decision rate (share of rows at or above ``threshold``)
    across protected groups ≥ 0.8; rows without a group are left out."""
    name = "disparate_impact"
    frame = pd.DataFrame({"group": groups.to_numpy(), "positive": np.asarray(p) >= threshold})
    rates = frame.dropna(subset=["group"]).groupby("group")["positive"]
    rates = rates.agg(rows="size", rate="mean")
    judged = rates[rates["rows"] >= config.min_group_rows].reset_index()
    where = f"at threshold {threshold:g} ({source})"
    if len(judged) < 2:
        return GateResult(
            name, False, f"fewer than two groups with ≥ {config.min_group_rows} holdout rows"
        )
    top = judged["rate"].max()
    if top == 0:
        return GateResult(name, True, f"no holdout row selected {where}")
    ratio = judged["rate"].min() / top
    listing = ", ".join(
        f"{g}={r:.2f}" for g, r in zip(judged["group"], judged["rate"], strict=True)
    )
    passed = bool(ratio >= config.disparate_impact_min)
    verdict = f"{'≥' if passed else '<'} {config.disparate_impact_min} {where}"
    return GateResult(name, passed, f"ratio {ratio:.2f} {verdict}; rates {listing}")


def _numeric_columns(series: pd.Series, prefix: str) -> pd.DataFrame:
    """A feature as numbers: numeric/bool as is, categories one-hot (one column per level)."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return pd.DataFrame({prefix: series.astype(float)})
    dummies = pd.get_dummies(series.astype("string"), prefix=prefix, dtype=float)
    return dummies.where(series.notna(), axis=0)


def proxy_correlations(frame: pd.DataFrame, features: Sequence[str], protected: str) -> pd.Series:
    """Per feature, the largest |Pearson correlation| between any of its encodings and any
    protected-group indicator (categorical × categorical = phi coefficient); 0 for a constant."""
    keep = frame[protected].notna()
    groups = pd.get_dummies(frame.loc[keep, protected].astype("string"), dtype=float)
    out = {}
    for feature in features:
        encoded = _numeric_columns(frame.loc[keep, feature], feature)
        # pandas pairs the non-missing rows of each two columns; a constant column gives NaN.
        corr = pd.concat([encoded, groups], axis=1).corr(min_periods=3)
        best = corr.loc[encoded.columns, groups.columns].abs().max().max()
        out[feature] = 0.0 if pd.isna(best) else float(best)
    return pd.Series(out, dtype=float).sort_values(ascending=False)


def gate_proxy_features(
    frame: pd.DataFrame, features: Sequence[str], config: GateConfig
) -> GateResult:
    """Gate 3b: no feature stands in for the protected attribute (|correlation| ≤ 0.5)."""
    name = "proxy_features"
    usable = [f for f in features if f in frame.columns and f != config.protected_attribute]
    corr = proxy_correlations(frame, usable, config.protected_attribute)
    proxies = corr[corr > config.proxy_max_abs_corr]
    if len(proxies):
        listing = ", ".join(f"{f} ({c:.2f})" for f, c in proxies.items())
        over = f"abs(correlation) with {config.protected_attribute} > {config.proxy_max_abs_corr}"
        return GateResult(name, False, f"{over}: {listing}")
    worst = f"{corr.index[0]} ({corr.iloc[0]:.2f})" if len(corr) else "none"
    return GateResult(name, True, f"largest abs(correlation) {worst} ≤ {config.proxy_max_abs_corr}")


def gate_protected_not_a_feature(features: Sequence[str], config: GateConfig) -> GateResult:
    """The protected attribute and excluded columns never reach the model."""
    name = "protected_not_a_feature"
    banned = {config.protected_attribute, *config.excluded_features}
    used = sorted(banned.intersection(features))
    if used:
        return GateResult(name, False, f"excluded columns used as features: {', '.join(used)}")
    return GateResult(name, True, f"none of {', '.join(sorted(banned))} among the features")


def gate_predict_latency(
    predict: Latency | None,
    explain: Latency | None,
    config: GateConfig,
    explain_method: str | None = None,
) -> GateResult:
    """Single-row scoring p99 (without and with reasons) within the service's budgets; a model
    that cannot explain is timed on scores only (the service refuses it reasons)."""
    name = "predict_latency"
    budgets = (config.predict_latency_budget_ms, config.explain_latency_budget_ms)
    if max(budgets) <= 0:
        return GateResult(name, True, "not checked: no latency budget set")
    if predict is None:
        return GateResult(name, False, "not measured: no holdout rows to time on")
    problems, seen = [], []
    explain_label = f"explain ({explain_method})" if explain_method else "explain"
    checks = [("predict", predict, budgets[0]), (explain_label, explain, budgets[1])]
    for label, figures, budget in checks:
        if budget <= 0:
            continue
        if figures is None:  # explainability is not this gate's concern, only its latency
            seen.append(f"{label}: not timed, the model cannot explain its scores")
            continue
        ok = figures.p99_ms <= budget
        (seen if ok else problems).append(
            f"{label} {figures.describe()} {'≤' if ok else '>'} budget {budget:g} ms"
        )
    rows = f"{predict.calls} holdout rows × {predict.repeats}, median of repeats"
    return GateResult(name, not problems, "; ".join(problems + seen) + f" ({rows})")


def gate_model_card(exists: bool) -> GateResult:
    """Gate 4: a model card is logged with the version's run."""
    missing = f"no {MODEL_CARD_ARTIFACT} (run `crm-predict registry card`)"
    return GateResult("model_card", exists, f"{MODEL_CARD_ARTIFACT} logged" if exists else missing)


# --- Gathering the inputs from the registry --------------------------------------------------


def fairness_results(
    info: VersionInfo, holdout: pd.DataFrame | None, p: np.ndarray | None, config: GateConfig
) -> list[GateResult]:
    """Disparate impact (classifiers) and proxy features on the holdout; shared with model cards."""
    protected = config.protected_attribute
    if holdout is None:
        reason = "no holdout artifact to check on"
        return [GateResult(n, False, reason) for n in ("disparate_impact", "proxy_features")]
    entity = info.tags.get("entity", "entity")
    if protected not in holdout.columns or not holdout[protected].notna().any():
        # The training-set contract carries the attribute only when the entity has one; B2B
        # deals and leads belong to companies, whose contacts' attribute the CRM leaves empty.
        where = "column" if protected not in holdout.columns else "value on any row"
        reason = f"the holdout has no {protected!r} {where} (the {entity} has no such attribute)"
        return [not_applicable(n, reason) for n in ("disparate_impact", "proxy_features")]
    results = []
    if p is not None:
        threshold, source = config.decision_threshold(info)
        results.append(gate_disparate_impact(p, holdout[protected], threshold, source, config))
    else:
        results.append(not_applicable("disparate_impact", "no binary decision (pyfunc)"))
    results.append(gate_proxy_features(holdout, info.feature_names, config))
    return results


def _champion_gate(
    client: MlflowClient,
    name: str,
    holdout: pd.DataFrame,
    p: np.ndarray,
    champion: VersionInfo | None,
    config: GateConfig,
) -> GateResult:
    """Gate 1 for classifiers: both versions scored on the candidate's holdout rows."""
    mine = classification_metrics(holdout["label"], p)
    if champion is None:
        return gate_not_worse_classifier(mine, None, config)
    try:
        p_champion = score_version(client, champion, holdout)
    except UserError as exc:  # the feature set changed: no same-row comparison is possible
        return GateResult(
            "not_worse_than_champion",
            False,
            f"champion v{champion.version} cannot be scored on this holdout ({exc})",
        )
    theirs = classification_metrics(holdout["label"], p_champion)
    return gate_not_worse_classifier(mine, theirs, config)


def _latency_gate(
    client: MlflowClient, info: VersionInfo, holdout: pd.DataFrame | None, config: GateConfig
) -> GateResult:
    """Predict latency of a classifier version, loaded and scored as the service does."""
    if not is_classifier(info.name):
        return not_applicable("predict_latency", "pyfunc models (CLV, next-best-time)")
    budgets = (config.predict_latency_budget_ms, config.explain_latency_budget_ms)
    if holdout is None or max(budgets) <= 0:
        return gate_predict_latency(None, None, config)
    if config.latency_probe is None:
        return GateResult("predict_latency", False, "not measured: no latency probe configured")
    measured = config.latency_probe(
        client, info.name, info.version, holdout, rows=config.latency_rows,
        repeats=config.latency_repeats, warmup=config.latency_warmup, seed=config.latency_seed,
    )  # fmt: skip
    return gate_predict_latency(measured.predict, measured.explain, config, measured.explain_method)


def check_gates(
    client: MlflowClient, name: str, version: str | int, config: GateConfig
) -> GateReport:
    """Run every gate for ``name`` v``version`` against the current champion."""
    from mlflow.exceptions import MlflowException

    info = get_version(client, name, version)
    current = version_for_alias(client, name, CHAMPION)
    # Re-checking the champion itself: nothing to compare against.
    champion = None if current in (None, info.version) else get_version(client, name, current)

    try:
        holdout = load_holdout(client, info.run_id)
    except (UserError, MlflowException):
        holdout = None

    results: list[GateResult] = []
    p = None
    if is_classifier(name):
        if holdout is None:
            results.append(
                GateResult("not_worse_than_champion", False, "no holdout artifact to compare on")
            )
        else:
            p = score_version(client, info, holdout)
            results.append(_champion_gate(client, name, holdout, p, champion, config))
        results.append(gate_minimum_data(info.train_counts(), config))
    else:
        theirs = None if champion is None else champion.metrics
        results.append(gate_not_worse_logged(info.metrics, theirs, key_metrics(name), config))
        results.append(not_applicable("minimum_data", "no binary label"))
    results += fairness_results(info, holdout, p, config)
    results.append(gate_protected_not_a_feature(info.feature_names, config))
    results.append(_latency_gate(client, info, holdout, config))
    results.append(gate_model_card(has_artifact(client, info.run_id, MODEL_CARD_ARTIFACT)))
    return GateReport(name, info.version, None if champion is None else champion.version, results)
