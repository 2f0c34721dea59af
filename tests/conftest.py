"""Shared fixtures: settings in tmp_path, CRM stores on SQLite and real PostgreSQL, Redis, MLflow.

A test that needs PostgreSQL or Redis skips with the reason when the server is absent, except when
CI=true: there a missing server is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid

import pytest
from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from sqlalchemy import text

from crm_predict.core.settings import Settings

PG_ADMIN_URL = os.environ.get(
    "CRM_PREDICT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
IN_CI = os.environ.get("CI", "").lower() == "true"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_server(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: required, not skipped)")
    pytest.skip(message)


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = Settings(data_dir=tmp_path / "data", optuna_trials=3, seed=7)
    s.ensure_dirs()
    return s


@pytest.fixture(scope="session")
def pg_url():
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    require_server("PostgreSQL", "127.0.0.1", 5432)
    admin = make_engine(PG_ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    name = f"crm_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def redis_url():
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/15"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    """A migrated CRM store on each backend; PostgreSQL tables are emptied between tests."""
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'crm.db'}")
        upgrade(eng)
        yield eng
        eng.dispose()
        return
    eng = make_engine(request.getfixturevalue("pg_url"))
    with eng.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine):
    with session_factory(engine)() as s:
        yield s


@pytest.fixture
def sqlite_session(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    upgrade(eng)
    with session_factory(eng)() as s:
        yield s
    eng.dispose()


@pytest.fixture
def cli(tmp_path):
    """``crm-predict --data-dir tmp_path/cli ARGS…`` in-process; returns typer's ``Result``."""
    from typer.testing import CliRunner

    from crm_predict.cli import app

    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, ["--data-dir", str(tmp_path / "cli"), *args])

    return run


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory):
    """One empty, migrated MLflow sqlite file; MLflow's schema creation takes seconds per store."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_client(tmp_path, monkeypatch, mlflow_template_db):
    """An MlflowClient on a sqlite tracking store in tmp_path (as MLflow's own examples do)."""
    import mlflow
    from mlflow import MlflowClient

    db = tmp_path / "mlflow.db"
    if not db.exists():
        shutil.copyfile(mlflow_template_db, db)
    uri = f"sqlite:///{db}"
    # Artifacts of experiments created with the default location land in the working directory.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def api(env):
    """The service's ASGI app with the fake online store, started once for the module, under the
    settings of the module's own ``env`` fixture (``env["env"]``: environment variables)."""
    from crm_predict.serving.service import CrmPredict
    from serving_models import FakeOnline, forget_bentoml_metrics
    from starlette.testclient import TestClient

    with pytest.MonkeyPatch.context() as mp:
        for key, value in env["env"].items():
            mp.setenv(key, value)
        mp.setattr("crm_predict.serving.hub.FeastOnline", FakeOnline)
        forget_bentoml_metrics()
        with TestClient(CrmPredict.to_asgi()) as client:
            yield client


@pytest.fixture
def service(api):
    import bentoml

    return bentoml.get_current_service()
