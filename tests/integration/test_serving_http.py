"""One real ``bentoml serve`` process (started the way ``crm-predict serve`` starts it) on a free
loopback port: called over HTTP, then stopped with its whole process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from datetime import datetime

import httpx
import numpy as np
import pytest
from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from crm_predict.crm_store.models import Contact
from crm_predict.serving.cli import serve_command
from mlflow import MlflowClient
from serving_models import lead_frame, register_models

from crm_predict.core.settings import Settings

pytestmark = pytest.mark.integration
TOKEN = "integration-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, base: str, log_path) -> None:
    """Until ``base``/healthz answers; fails with the server's log if it exits or is slow."""
    deadline = time.monotonic() + 240  # imports are slow on a shared 2-core machine
    while time.monotonic() < deadline:
        assert proc.poll() is None, log_path.read_text()[-3000:]
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"server not up in 240 s:\n{log_path.read_text()[-3000:]}")


@contextlib.contextmanager
def running_server(settings: Settings, log_path):
    port = free_port()
    argv, env = serve_command(settings, host="127.0.0.1", port=port)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base, log_path)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_bentoml_serve_answers_over_http_and_stops(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    versions = register_models(MlflowClient(tracking_uri=uri, registry_uri=uri))
    crm = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = make_engine(crm)
    upgrade(engine)
    with session_factory(engine)() as session:  # a contact the API can be asked for by its ref
        t = datetime(2026, 6, 1)
        session.add(Contact(id=5, external_id="cont_000005", created_at=t, updated_at=t))
        session.commit()
    engine.dispose()
    settings = Settings(
        data_dir=tmp_path / "data", mlflow_tracking_uri=uri, database_url=crm, api_token=TOKEN
    )
    row = {
        k: (v.item() if isinstance(v, np.generic) else v)
        for k, v in lead_frame(1, seed=9).drop(columns="rule_score").iloc[0].items()
    }
    # rule_score is derived: the service computes it from its raw inputs (#20).
    row |= {"site_visits_90d": 4, "pricing_views_90d": 1, "whitepapers_90d": 0, "trials_90d": 1}
    with running_server(settings, tmp_path / "server.log") as base, httpx.Client(base_url=base, timeout=30) as http:  # fmt: skip
        models = http.get("/models").json()["models"]
        assert all(s["status"] == "ready" for s in models.values()), models
        assert {m: s["version"] for m, s in models.items()} == {k: str(v) for k, v in versions.items()}  # fmt: skip

        single = http.post("/lead_score", json={"features": row, "explain": True})
        assert single.status_code == 200, single.text
        body = single.json()
        assert 1 <= body["prediction"]["score"] <= 99
        assert body["prediction"]["reasons"]["method"] == "xgboost_treeshap"
        assert body["model"] == {"name": "lead_scoring", "version": str(versions["lead_scoring"]), "alias": "champion", "run_id": body["model"]["run_id"]}  # fmt: skip

        batch = http.post("/lead_score/batch", json={"rows": [row, row]})
        assert batch.status_code == 200
        assert [p["score"] for p in batch.json()["predictions"]] == [body["prediction"]["score"]] * 2  # fmt: skip
        nbt = http.post("/next_best_time", json={"contact_id": 5})
        assert nbt.status_code == 200 and len(nbt.json()["prediction"]["best_slots"]) == 3
        by_ref = http.post("/next_best_time", json={"contact_ref": "cont_000005"})
        assert by_ref.status_code == 200, by_ref.text
        assert by_ref.json()["prediction"] == {**nbt.json()["prediction"], "external_id": "cont_000005"}  # fmt: skip
        unknown = http.post("/next_best_time/batch", json={"contact_refs": ["cont_000005", "nope"]})
        assert unknown.status_code == 404 and unknown.json()["field"] == "contact_refs"

        assert http.post("/lead_score", json={"lead_id": "x"}).status_code == 400
        assert http.post("/lead_score", json={"lead_id": 1, "write_back": True}).status_code == 401
        assert http.post("/admin/reload", headers={"Authorization": "Bearer no"}).status_code == 403

        # No Feast repo in this world: by-id reads and readiness say the online store is missing.
        by_id = http.post("/lead_score", json={"lead_id": 1})
        assert by_id.status_code == 503 and "online store" in by_id.json()["error"]
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["online_store"]["status"] == "unreachable"
        assert all(m["status"] == "ready" for m in ready.json()["models"].values())
        assert "/lead_score" in http.get("/docs.json").json()["paths"]
