"""``crm-predict features export / apply / materialize / online`` on a tiny CRM, and their errors."""

from __future__ import annotations

import pytest
from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from feature_sample import build_crm
from typer.testing import CliRunner

from crm_predict.cli import app
from crm_predict.core.errors import UserError
from crm_predict.core.settings import Settings

runner = CliRunner()


def test_features_commands_export_apply_materialize_and_read(tmp_path):
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    settings.ensure_dirs()
    engine = make_engine(settings.crm_url)
    upgrade(engine)
    with session_factory(engine)() as session:
        build_crm(session)
    engine.dispose()

    for command in (["export"], ["apply"], ["materialize"]):
        result = runner.invoke(app, ["--data-dir", str(data), "features", *command])
        assert result.exit_code == 0, (command, result.output, result.exception)
    assert "customer_transactions" in result.output

    shown = runner.invoke(app, ["--data-dir", str(data), "features", "online", "churn", "3"])
    assert shown.exit_code == 0 and "rfm_frequency" in shown.output

    unknown = runner.invoke(app, ["--data-dir", str(data), "features", "online", "churn", "777"])
    assert isinstance(unknown.exception, UserError) and "777" in str(unknown.exception)

    bad_view = runner.invoke(app, ["--data-dir", str(data), "features", "materialize", "--view", "nope"])  # fmt: skip
    assert isinstance(bad_view.exception, UserError) and "nope" in str(bad_view.exception)


@pytest.mark.parametrize("command", [["apply"], ["materialize"]])
def test_commands_before_export_name_the_missing_step(tmp_path, command):
    result = runner.invoke(app, ["--data-dir", str(tmp_path / "data"), "features", *command])
    assert isinstance(result.exception, UserError)
    assert "crm-predict features export" in str(result.exception)


def test_export_of_an_empty_store_is_a_clear_error(tmp_path):
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    settings.ensure_dirs()
    upgrade(make_engine(settings.crm_url))
    result = runner.invoke(app, ["--data-dir", str(data), "features", "export"])
    assert isinstance(result.exception, UserError) and "empty" in str(result.exception)
