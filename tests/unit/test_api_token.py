"""The service refuses to start without a real API token (an unset, blank or placeholder token
would let anyone write back), unless a local demo opts out and gets a one-off random token."""

from __future__ import annotations

import pytest
from crm_predict.serving.cli import serve_command
from typer.testing import CliRunner

from crm_predict.cli import app, main
from crm_predict.core.errors import UserError
from crm_predict.core.settings import Settings


@pytest.mark.parametrize("token", ["", "   ", "change-me"])
def test_serving_refuses_unset_blank_or_placeholder_token(tmp_path, token):
    settings = Settings(data_dir=tmp_path, api_token=token)
    with pytest.raises(UserError, match="CRM_PREDICT_API_TOKEN") as refused:
        serve_command(settings)
    assert "CRM_PREDICT_ALLOW_NO_API_TOKEN" in str(refused.value)


def test_unset_token_is_the_default(tmp_path, monkeypatch):
    monkeypatch.delenv("CRM_PREDICT_API_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env file here
    with pytest.raises(UserError):
        Settings().serving_token()


def test_configured_token_reaches_the_server_process(tmp_path):
    _, env = serve_command(Settings(data_dir=tmp_path, api_token="s3cret-token"))
    assert env["CRM_PREDICT_API_TOKEN"] == "s3cret-token"


def test_demo_opt_out_serves_with_a_fresh_unguessable_token(tmp_path):
    settings = Settings(data_dir=tmp_path, api_token="", allow_no_api_token=True)
    first = serve_command(settings)[1]["CRM_PREDICT_API_TOKEN"]
    second = serve_command(settings)[1]["CRM_PREDICT_API_TOKEN"]
    assert len(first) >= 32 and first != second


def test_cli_serve_without_token_is_a_clear_error_and_starts_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CRM_PREDICT_API_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    started = []
    monkeypatch.setattr("crm_predict.serving.cli.os.execve", lambda *a: started.append(a))
    monkeypatch.setattr("sys.argv", ["crm-predict", "--data-dir", str(tmp_path), "serve"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2 and started == []
    out = capsys.readouterr().out
    assert "error: no API token" in out and "Traceback" not in out

    monkeypatch.setenv("CRM_PREDICT_ALLOW_NO_API_TOKEN", "true")
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "serve"])
    assert result.exit_code == 0, result.output
    assert "this run's token is" in result.output and len(started) == 1


def test_the_service_itself_refuses_to_start_without_a_token(tmp_path, monkeypatch):
    """A bare ``bentoml serve`` (not through ``crm-predict serve``) refuses too."""
    from crm_predict.serving.service import CrmPredict

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRM_PREDICT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CRM_PREDICT_API_TOKEN", "")
    with pytest.raises(UserError, match="CRM_PREDICT_API_TOKEN"):
        CrmPredict.inner()


@pytest.mark.parametrize("configured", ["", "s3cret-token"])
@pytest.mark.parametrize("header", ["Bearer ", "Bearer    ", "bearer"])
def test_an_empty_bearer_never_passes(configured, header):
    from crm_predict.serving.service import ApiError, check_token

    with pytest.raises(ApiError) as refused:
        check_token(header, configured)
    assert refused.value.status == 401
