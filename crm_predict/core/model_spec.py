"""What the product knows about one model, in one place.

Each model's own module (``training/<name>.py``) declares one ``ModelSpec``; ``crm_predict.training.specs``
collects them, and features, registry, serving and the reports read them instead of keeping
per-model tables of their own. The defaults are a classifier's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from crm_predict.core.rules import Rules

FEATURE_SERVICE_VERSION = "v1"
MetricRow = tuple[str, str | None, str | None]  # (metric, baseline metric, oracle metric)


@dataclass(frozen=True)
class ModelSpec:
    """One model: who it scores, under which names, how it is judged and described."""

    name: str  # the registered model name (and the API route's model)
    kind: Literal["classifier", "clv", "next_best_time"]
    entity: str  # feature entity: lead, deal, customer (a contact with orders) or contact
    crm_entity: str  # entity_type of its tags, tasks and prediction-log rows
    id_field: str  # the id field of its API requests and records
    score_output: str  # the record field the prediction log and the batch's ``score`` keep
    label: str  # the ``crm_predict.features.labels.LABELS`` entry giving its rows and labels
    # Its FeatureService: (feature view, features; None: every feature of the view) pairs.
    views: tuple[tuple[str, tuple[str, ...] | None], ...]
    purpose: str  # the model card's "what it predicts"
    known_limits: str  # the model card's model-specific limit
    # (holdout metric, baseline metric, oracle metric): the quality it is judged by.
    quality: tuple[str, str, str] = ("auc", "baseline_auc", "oracle_auc")
    # The probability cut the fairness gates compare groups at (None: not a classifier).
    decision_threshold: Callable[[Rules], float] | None = None
    lower_is_better: bool = False  # of ``quality[0]``
    # Logged metrics that summarise it (``list``/``compare``/gates), True where higher is better.
    key_metrics: tuple[tuple[str, bool], ...] = (
        ("auc", True), ("brier", False), ("ece", False), ("lift_at_10", True),
    )  # fmt: skip
    card_metrics: tuple[MetricRow, ...] = (
        ("auc", "baseline_auc", "oracle_auc"),
        ("pr_auc", "baseline_pr_auc", None),
        ("lift_at_10", "baseline_lift_at_10", None),
        ("log_loss", None, None),
    )
    # More model-card lines from the version's run params and tags (e.g. fitted parameters).
    card_lines: Callable[[Mapping[str, str], Mapping[str, str]], list[str]] | None = None
    # What ``crm-predict train`` prints: a line about the result (e.g. its fit), its metrics.
    train_note: Callable[[Any], str] | None = None
    train_metrics: tuple[str, ...] = ("auc", "baseline_auc", "oracle_auc", "brier", "ece", "lift_at_10")  # fmt: skip
    pyfunc_schema: str | None = None  # the pyfunc's outputs as Spark DDL (None: predict_proba)
    reads_features: bool = True  # False: the served model takes entity ids and looks them up
    optional_inputs: tuple[str, ...] = ()  # raw-row inputs beyond its features (tiers, segments)
    # API record fields its write-back rules read (``rule_points``: the lead points and MQL flag).
    record_context: tuple[str, ...] = ()
    tag_features: tuple[str, ...] = ()  # its features the built-in tags read beside the context
    rfm_medians: bool = False  # its tags cut RFM segments at the population's medians

    @property
    def feature_service(self) -> str:
        return f"{self.name}_{FEATURE_SERVICE_VERSION}"

    @property
    def is_classifier(self) -> bool:
        return self.kind == "classifier"
