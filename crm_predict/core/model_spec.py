"""What the product knows about one model, in one place.

Each model's own module (``training/<name>.py``) declares one ``ModelSpec``; ``crm_predict.training.specs``
collects them, and features, registry, serving and the reports read them instead of keeping
per-model tables of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from crm_predict.core.rules import Rules

FEATURE_SERVICE_VERSION = "v1"


@dataclass(frozen=True)
class ModelSpec:
    """One model: who it scores, under which names, how it is judged and described."""

    name: str  # the registered model name (and the API route's model)
    kind: Literal["classifier", "clv", "next_best_time"]
    entity: str  # feature entity: lead, deal, customer (a contact with orders) or contact
    crm_entity: str  # entity_type of its tags, tasks and prediction-log rows
    id_field: str  # the id field of its API requests and records
    score_output: str  # the record field the prediction log and the batch's ``score`` keep
    quality: tuple[str, str, str]  # (holdout metric, baseline metric, oracle metric)
    purpose: str  # the model card's "what it predicts"
    known_limits: str  # the model card's model-specific limit
    # The probability cut the fairness gates compare groups at (None: not a classifier).
    decision_threshold: Callable[[Rules], float] | None = None
    lower_is_better: bool = False  # of ``quality[0]``

    @property
    def feature_service(self) -> str:
        return f"{self.name}_{FEATURE_SERVICE_VERSION}"

    @property
    def is_classifier(self) -> bool:
        return self.kind == "classifier"
