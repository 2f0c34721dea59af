"""Feature declarations: every Field described, FeatureServices = the declared feature lists, and the
excluded (protected) attributes can never reach a model."""

from __future__ import annotations

import pytest
from crm_predict.features import definitions as defs

from crm_predict.core.errors import UserError
from crm_predict.core.rules import MODEL_NAMES
from crm_predict.core.settings import Settings


@pytest.fixture
def built(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    views = defs.feature_views(settings)
    odfv = defs.rule_score_view(views)
    return settings, views, odfv, defs.feature_services(settings, views, odfv)


def test_every_field_has_a_dtype_and_a_description(built):
    _, views, odfv, _ = built
    for view in [*views.values(), odfv]:
        for field in view.features:
            assert field.dtype is not None and field.description.strip(), (view.name, field.name)


def test_one_versioned_feature_service_per_model(built):
    _, _, _, services = built
    assert sorted(services) == sorted(MODEL_NAMES)
    assert {s.name for s in services.values()} == {f"{m}_v1" for m in MODEL_NAMES}


def test_feature_services_hold_exactly_the_declared_feature_lists(built):
    settings, _, _, services = built
    for model, service in services.items():
        served = [f.name for p in service.feature_view_projections for f in p.features]
        assert served == defs.feature_names(model, settings)
        assert len(served) == len(set(served)), f"{model}: a feature name appears twice"


def test_clv_service_feeds_the_lifetimes_inputs():
    assert defs.feature_names("clv")[:4] == ["frequency", "recency", "T", "monetary_value"]


def test_no_service_uses_an_excluded_feature():
    excluded = set(Settings().excluded_features)
    for model in MODEL_NAMES:
        assert not excluded & set(defs.feature_names(model))


def test_excluded_feature_guard_raises(monkeypatch, tmp_path):
    with pytest.raises(UserError, match="gender"):
        defs.check_excluded("churn", ["region", "gender"], ["gender", "age_band"])
    leaky = {**defs.SERVICES, "churn": (("customer_profile", ("region", "age_band")),)}
    monkeypatch.setattr(defs, "SERVICES", leaky)
    settings = Settings(data_dir=tmp_path / "data")
    views = defs.feature_views(settings)
    with pytest.raises(UserError, match="age_band"):
        defs.feature_services(settings, views, defs.rule_score_view(views))


def test_excluded_features_are_configurable(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", excluded_features=["region"])
    with pytest.raises(UserError, match="region"):
        defs.feature_names("churn", settings)


def test_unknown_model_is_a_user_error():
    with pytest.raises(UserError, match="unknown model"):
        defs.feature_names("upsell")
