"""Every model's ``ModelSpec``, from the model's own module, in the order the product lists them."""

from __future__ import annotations

from crm_predict.training import churn, clv, deal_health, lead_scoring, next_best_time

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


def spec(name: str) -> ModelSpec:
    """The spec of model ``name`` (a registered name such as ``lead_scoring``)."""
    if name not in SPECS:
        raise UserError(f"unknown model {name!r}; known: {', '.join(SPECS)}")
    return SPECS[name]
