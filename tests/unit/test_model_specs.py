"""The model specs agree with the feature repo, the rules and the API schemas they stand for."""

import pytest
from crm_predict.features.definitions import ENTITIES, SERVICES, service_name
from crm_predict.serving import schemas
from crm_predict.training.specs import CLASSIFIERS, SPECS, spec

from crm_predict.core.rules import MODEL_NAMES, RULES


def test_every_model_has_one_spec_in_the_products_order():
    assert tuple(SPECS) == MODEL_NAMES
    assert CLASSIFIERS == ("lead_scoring", "deal_health", "churn")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_spec_names_what_the_feature_repo_and_the_api_use(name):
    model = SPECS[name]
    assert model.name in SERVICES and service_name(name) == model.feature_service == f"{name}_v1"
    assert model.id_field == ENTITIES[model.entity]
    assert model.crm_entity in {"lead", "deal", "contact"}
    records = {
        schemas.LeadScore, schemas.DealHealth, schemas.Churn, schemas.Clv, schemas.NextBestTime,
    }  # fmt: skip
    fields = [r for r in records if model.score_output in r.model_fields]
    assert fields and all(model.id_field in r.model_fields for r in fields)
    assert (model.decision_threshold is not None) == model.is_classifier
    if model.is_classifier:
        assert 0 < model.decision_threshold(RULES) < 1


def test_an_unknown_model_is_a_clear_error():
    from crm_predict.core.errors import UserError

    with pytest.raises(UserError, match="unknown model 'nope'; known: lead_scoring"):
        spec("nope")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_specs_data_names_what_features_registry_and_serving_know(name):
    """Labels, views, contexts, metrics and record fields: the keys the other layers look up."""
    from crm_predict.features.definitions import RULE_SCORE_VIEW, VIEWS
    from crm_predict.features.labels import LABELS
    from crm_predict.features.rule_context import CONTEXTS

    model = SPECS[name]
    assert model.label in LABELS and model.entity in CONTEXTS
    assert all(VIEWS[v].entity == model.entity for v, _ in model.views if v != RULE_SCORE_VIEW)
    assert (model.pyfunc_schema is None) == model.is_classifier
    assert model.is_classifier or f"{model.score_output} double" in model.pyfunc_schema
    assert dict(model.key_metrics)[model.quality[0]] is not model.lower_is_better
    assert model.card_metrics[0][:2] == model.quality[:2]
    (record,) = [r for r in vars(schemas).values() if getattr(r, "model_fields", {}).keys() >= {model.id_field, model.score_output}]  # fmt: skip
    assert set(model.record_context) <= set(record.model_fields)
