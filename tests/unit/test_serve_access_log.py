"""``CRM_PREDICT_ACCESS_LOG=false`` and the metrics, tracing and workers settings reach BentoML
through its JSON overrides, keeping any overrides the caller already set."""

from __future__ import annotations

import json

import pytest
from crm_predict.serving.cli import SERVICE_NAME, serve_command

from crm_predict.core.errors import UserError
from crm_predict.core.settings import Settings

TOKEN = "t" * 32
SETTINGS = ("ACCESS_LOG", "REQUEST_METRICS", "REQUEST_TRACING")


def test_per_request_logging_metrics_and_tracing_are_off_by_default(tmp_path, monkeypatch):
    for name in ("BENTOML_CONFIG_OVERRIDES", *(f"CRM_PREDICT_{s}" for s in SETTINGS)):
        monkeypatch.delenv(name, raising=False)
    _, env = serve_command(Settings(data_dir=tmp_path, api_token=TOKEN))
    assert json.loads(env["BENTOML_CONFIG_OVERRIDES"])["services"][SERVICE_NAME] == {
        "logging": {"access": {"enabled": False}},
        "metrics": {"enabled": False},
        "tracing": {"excluded_urls": [".*"]},
    }


def test_turned_on_they_are_left_to_bentoml(tmp_path, monkeypatch):
    monkeypatch.delenv("BENTOML_CONFIG_OVERRIDES", raising=False)
    monkeypatch.setenv("CRM_PREDICT_ACCESS_LOG", "true")
    monkeypatch.setenv("CRM_PREDICT_REQUEST_METRICS", "true")
    monkeypatch.setenv("CRM_PREDICT_REQUEST_TRACING", "true")
    _, env = serve_command(Settings(data_dir=tmp_path, api_token=TOKEN))
    assert "BENTOML_CONFIG_OVERRIDES" not in env


def test_access_log_off_merges_into_the_callers_overrides(tmp_path, monkeypatch):
    mine = {"services": {SERVICE_NAME: {"traffic": {"timeout": 7}}}, "other": 1}
    monkeypatch.setenv("BENTOML_CONFIG_OVERRIDES", json.dumps(mine))
    settings = Settings(
        data_dir=tmp_path, api_token=TOKEN, access_log=False, request_metrics=True,
        request_tracing=True,
    )  # fmt: skip
    _, env = serve_command(settings)
    config = json.loads(env["BENTOML_CONFIG_OVERRIDES"])
    assert config["services"][SERVICE_NAME] == {
        "traffic": {"timeout": 7},
        "logging": {"access": {"enabled": False}},
    }
    assert config["other"] == 1


def test_bad_overrides_are_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("BENTOML_CONFIG_OVERRIDES", "{nope")
    with pytest.raises(UserError, match="BENTOML_CONFIG_OVERRIDES"):
        serve_command(Settings(data_dir=tmp_path, api_token=TOKEN, access_log=False))


def test_the_overrides_name_the_served_service():
    from crm_predict.serving.service import SERVICE_NAME as served

    assert served == SERVICE_NAME


def test_metrics_tracing_and_workers_settings_reach_bentoml(tmp_path, monkeypatch):
    """Each serving setting becomes its key under ``services.crm_predict``, beside the caller's."""
    monkeypatch.setenv("BENTOML_CONFIG_OVERRIDES", json.dumps({"services": {SERVICE_NAME: {"threads": 1}}}))  # fmt: skip
    settings = Settings(
        data_dir=tmp_path, api_token=TOKEN, access_log=True, request_metrics=False,
        request_tracing=False, serving_workers=2,
    )  # fmt: skip
    _, env = serve_command(settings)
    assert json.loads(env["BENTOML_CONFIG_OVERRIDES"])["services"][SERVICE_NAME] == {
        "threads": 1,
        "metrics": {"enabled": False},
        "tracing": {"excluded_urls": [".*"]},
        "workers": 2,
    }
    monkeypatch.delenv("BENTOML_CONFIG_OVERRIDES")
    on = {"access_log": True, "request_metrics": True, "request_tracing": True}
    _, env = serve_command(Settings(data_dir=tmp_path, api_token=TOKEN, serving_workers=1, **on))
    assert "BENTOML_CONFIG_OVERRIDES" not in env
