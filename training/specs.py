"""Every model's spec, from the model's own module, in the order the product lists them.

The five tabular models (``SPECS``) read a FeatureService, and features, the batch, serving and
the quickstart loop over them. The text model ``message_intent`` reads the message itself: it has
no FeatureService, label function or rule context, so it is not among them, and those loops stay
as they are. Its ``TextModelSpec`` (``TEXT_SPECS``) carries, under ``ModelSpec``'s names, what the
registry's cards and gates and the CLI read (purpose, limits, key and card metrics); ``ALL_SPECS``
is every spec by registered name, for readers that take either kind.
"""

from __future__ import annotations

from crm_predict.training import (
    churn,
    clv,
    deal_health,
    lead_scoring,
    message_intent,
    next_best_time,
)

from crm_predict.core.errors import UserError
from crm_predict.core.model_spec import ModelSpec

# Each model's module: its ``MODEL`` spec, ``tag_values(scored, rules, rfm_medians)`` and
# ``tasks(scored, now, rules)`` (the write-back's rules for its scores); a classifier's also
# ``response(p, rules)`` (its API record's fields) and ``train``/``outputs`` (the CLI's).
MODULES = {
    module.MODEL.name: module for module in (lead_scoring, deal_health, churn, clv, next_best_time)
}
SPECS: dict[str, ModelSpec] = {name: module.MODEL for name, module in MODULES.items()}
CLASSIFIERS = tuple(name for name, spec in SPECS.items() if spec.is_classifier)
# Text models: their module's ``MODEL``, ``training_data(settings, …)`` and ``train(client, …)``.
TEXT_MODULES = {module.MODEL.name: module for module in (message_intent,)}
TEXT_SPECS: dict[str, message_intent.TextModelSpec] = {
    name: module.MODEL for name, module in TEXT_MODULES.items()
}
ALL_SPECS: dict[str, ModelSpec | message_intent.TextModelSpec] = {**SPECS, **TEXT_SPECS}


def spec(name: str) -> ModelSpec:
    """The spec of tabular model ``name`` (a registered name such as ``lead_scoring``)."""
    if name not in SPECS:
        raise UserError(f"unknown model {name!r}; known: {', '.join(SPECS)}")
    return SPECS[name]
