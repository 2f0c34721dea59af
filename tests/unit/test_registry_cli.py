"""Every ``crm-predict registry …`` command and ``crm-predict retrain`` run once on tiny data."""

import numpy as np
import pytest
from crm_predict.registry.lifecycle import CHALLENGER, CHAMPION, PromotionBlocked, version_for_alias
from crm_predict.registry.retrain import retrain
from registry_fixtures import log_classifier_version, synthetic_frame
from typer.testing import CliRunner

from crm_predict.cli import app
from crm_predict.core.settings import Settings

NAME = "churn"


@pytest.fixture
def client(mlflow_client, monkeypatch):
    monkeypatch.setenv("CRM_PREDICT_MLFLOW_TRACKING_URI", mlflow_client.tracking_uri)
    monkeypatch.setenv("CRM_PREDICT_OPTUNA_TRIALS", "1")
    # The fixture pipeline costs ~4 ms a row (ColumnTransformer): near the default budget.
    monkeypatch.setenv("CRM_PREDICT_PREDICT_LATENCY_BUDGET_MS", "0")
    monkeypatch.setenv("CRM_PREDICT_EXPLAIN_LATENCY_BUDGET_MS", "0")
    return mlflow_client


def run(tmp_path, *args: str):
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "data"), *args])
    return result


def ok(tmp_path, *args: str) -> str:
    result = run(tmp_path, *args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_registry_commands_end_to_end(client, tmp_path):
    v1 = log_classifier_version(client, NAME, synthetic_frame(seed=1), card=True)
    v2 = log_classifier_version(client, NAME, synthetic_frame(seed=2))

    assert "auc" in ok(tmp_path, "registry", "list")
    ok(tmp_path, "registry", "challenger", NAME, v2)
    assert version_for_alias(client, NAME, CHALLENGER) == v2
    gates = ok(tmp_path, "registry", "gates", NAME, v2)
    assert "FAIL" in gates and "predict_latency" in gates  # no card yet; no latency budget
    card = tmp_path / "card.md"
    ok(tmp_path, "registry", "card", NAME, v2, "--out", str(card))
    assert card.read_text().startswith(f"# Model card: {NAME} v{v2}")

    assert "champion → v1" in ok(tmp_path, "registry", "promote", NAME, v1, "--by", "tester")
    out = ok(tmp_path, "registry", "compare", NAME)  # default: champion vs challenger
    assert "v1 (champion)" in out and "v2 (challenger)" in out and "logged as run" in out
    ok(tmp_path, "registry", "promote", NAME, v2)
    assert "rolled back from v2" in ok(tmp_path, "registry", "rollback", NAME)
    assert version_for_alias(client, NAME, CHAMPION) == v1

    assert "fallback" in ok(tmp_path, "registry", "resolve", NAME, "--segment", "tenant_x")
    current = tmp_path / "current.csv"
    synthetic_frame(seed=9, n=800, shift=1.0).to_csv(current, index=False)
    out = ok(tmp_path, "registry", "drift", NAME, "--data", str(current))
    assert "activity" in out and "drift" in out

    worse = log_classifier_version(
        client, NAME, synthetic_frame(seed=3), features=["x_noise"], card=True
    )
    blocked = run(tmp_path, "registry", "promote", NAME, worse)
    assert isinstance(blocked.exception, PromotionBlocked)
    assert "not_worse_than_champion" in blocked.output
    assert version_for_alias(client, NAME, CHAMPION) == v1


def test_list_shows_aliases_and_compare_defaults_to_champion_vs_challenger(
    client, tmp_path, monkeypatch
):
    """search_model_versions leaves aliases empty: they are read from the registered model. With
    three versions, the default comparison is champion v1 vs challenger v2, not the newest two."""
    import re

    from crm_predict.registry import cli as registry_cli

    monkeypatch.setattr(registry_cli.console, "width", 200)  # no truncated cells

    versions = [log_classifier_version(client, NAME, synthetic_frame(seed=s)) for s in (1, 2, 3)]
    missing = run(tmp_path, "registry", "compare", NAME, "--no-log")
    assert "has no champion and no challenger alias" in str(missing.exception)
    client.set_registered_model_alias(NAME, CHAMPION, versions[0])
    client.set_registered_model_alias(NAME, CHALLENGER, versions[1])

    listed = ok(tmp_path, "registry", "list", NAME)
    rows = {m[0]: m[1].strip() for m in re.findall(r"│ (\d+)\s+│ ([a-z, ]*)│", listed)}
    assert rows == {"1": "champion", "2": "challenger", "3": ""}, listed
    out = ok(tmp_path, "registry", "compare", NAME, "--no-log")
    assert "v1 (champion)" in out and "v2 (challenger)" in out and "v3" not in out, out
    client.delete_registered_model_alias(NAME, CHALLENGER)
    missing = str(run(tmp_path, "registry", "compare", NAME, "--no-log").exception)
    assert "has no challenger alias (champion v1; versions 1, 2, 3)" in missing


def test_retrain_command_makes_a_challenger_with_a_card(client, tmp_path):
    data = tmp_path / "churn.csv"
    synthetic_frame(seed=11, n=1500).to_csv(data, index=False)
    out = ok(tmp_path, "retrain", NAME, "--data", str(data))
    assert "auto_promote is off" in out or "gates failed" in out
    assert version_for_alias(client, NAME, CHALLENGER) == "1"
    assert version_for_alias(client, NAME, CHAMPION) is None
    run_id = client.get_model_version(NAME, "1").run_id
    assert any(f.path == "model_card.md" for f in client.list_artifacts(run_id))


def test_retrain_auto_promotes_only_when_allowed_and_gates_pass(client, tmp_path):
    from crm_predict.registry.gates import GateConfig
    from crm_predict.serving.latency import measure_serving_latency
    from crm_predict.training.classifier import CANDIDATES

    data = tmp_path / "churn.parquet"
    synthetic_frame(seed=12).to_parquet(data)
    only_lr = (CANDIDATES[0],)  # one cheap candidate: the gates, not the search, are under test
    settings = Settings(
        data_dir=tmp_path / "data", mlflow_tracking_uri=client.tracking_uri, optuna_trials=1,
        auto_promote=True, predict_latency_budget_ms=50.0, explain_latency_budget_ms=100.0,
    )  # fmt: skip
    # Budgets far above any machine's figure: that retrain times the version is under test here.
    config = GateConfig.from_settings(settings, latency_probe=measure_serving_latency)
    result = retrain(settings, client, NAME, config, data=data, candidates=only_lr)
    assert result.report.passed, result.report.failure_message()
    latency = {r.name: r.detail for r in result.report.results}["predict_latency"]
    assert "≤ budget 50 ms" in latency  # the trained pipeline, loaded as the service loads it
    assert result.promoted is not None and result.promoted.by == "retrain"
    assert version_for_alias(client, NAME, CHAMPION) == result.version

    # Scrambled features in the training part only: the holdout stays real, the model learns little.
    broken = synthetic_frame(seed=13)
    older = broken.index[: int(len(broken) * 0.8)]
    rng = np.random.default_rng(0)
    for column in ("activity", "recency"):
        broken.loc[older, column] = rng.permutation(broken.loc[older, column].to_numpy())
    broken.to_parquet(data)
    worse = retrain(settings, client, NAME, config, data=data, candidates=only_lr)
    assert "not_worse_than_champion" in [r.name for r in worse.report.failed]
    assert worse.promoted is None
    assert version_for_alias(client, NAME, CHAMPION) == result.version
    assert version_for_alias(client, NAME, CHALLENGER) == worse.version
