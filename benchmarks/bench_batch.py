"""Nightly batch benchmark: a demo CRM of ``n`` customers (plus their leads and deals), five trained
champions, then one full ``crm-predict batch score`` — export, features, five models, tags, tasks
and prediction log — timed per stage, with the job's peak RSS, on SQLite and PostgreSQL.

Run: ``python -m benchmarks.bench_batch [n_customers] [sqlite,postgresql]`` (default 100000, both).
Set ``CRM_PREDICT_BENCH_DIR`` to keep the generated store and models between runs (the demo and the
training are not what is measured); ``CRM_PREDICT_BENCH_TOY_MODELS=1`` registers the serving tests'
toy champions (same flavours and feature names) instead of training the five models. PostgreSQL uses ``CRM_PREDICT_BENCH_PG`` (default the local
test server) and is skipped with a note when unreachable.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

from sqlalchemy import text

from crm_predict.rules import MODEL_NAMES
from crm_predict.settings import Settings
from crm_store.db import make_engine, session_factory, upgrade

PG_ADMIN_URL = os.environ.get(
    "CRM_PREDICT_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
AS_OF = datetime(2026, 6, 30)
AT = datetime(2026, 6, 30, 2, 0)


def _cli(settings: Settings, *args: str, env: dict | None = None) -> float:
    """Run one ``crm-predict`` command for ``settings``; seconds taken."""
    start = time.perf_counter()
    code = "from crm_predict.cli import main; main()"
    environ = {
        **os.environ,
        **(env or {}),
        "CRM_PREDICT_MLFLOW_TRACKING_URI": settings.tracking_uri,
    }
    if settings.database_url:
        environ["CRM_PREDICT_DATABASE_URL"] = settings.database_url
    subprocess.run(
        [sys.executable, "-c", code, "--data-dir", str(settings.data_dir), *args],
        check=True, env=environ, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - start


def prepare_store(settings: Settings, n_customers: int) -> dict[str, float]:
    """Generate the demo CRM (once per store) and export the feature sources."""
    from crm_store.demo import generate_demo

    figures = {}
    engine = make_engine(settings.crm_url)
    upgrade(engine)
    with session_factory(engine)() as session:
        if not session.execute(text("SELECT COUNT(*) FROM contacts")).scalar_one():
            start = time.perf_counter()
            generate_demo(session, settings, n_customers, as_of=AS_OF, seed=settings.seed)
            session.commit()
            figures["demo_seconds"] = time.perf_counter() - start
    engine.dispose()
    return figures


def train_champions(settings: Settings) -> float:
    """Train each model once (small search budget) and make the newest version champion."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    start = time.perf_counter()
    if os.environ.get("CRM_PREDICT_BENCH_TOY_MODELS"):
        # Same flavours and feature names as the trained champions, without the training time.
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from serving_models import register_models

        register_models(client, kinds={"deal_health": "xgboost", "churn": "xgboost"})  # NaN-safe
        return time.perf_counter() - start
    if not (settings.feature_dir / "export.json").exists():
        _cli(settings, "features", "export")
    for name in MODEL_NAMES:
        try:
            client.get_model_version_by_alias(name, "champion")
            continue
        except Exception:  # noqa: BLE001 - no champion yet
            pass
        _cli(settings, "train", name, env={"CRM_PREDICT_OPTUNA_TRIALS": "2"})
        versions = client.search_model_versions(f"name = '{name}'")
        newest = max(versions, key=lambda v: int(v.version))
        client.set_registered_model_alias(name, "champion", newest.version)
    return time.perf_counter() - start


def run_job(settings: Settings) -> dict:
    """One full batch run in a fresh process (so its peak RSS is the job's): summary + RSS."""
    code = (
        "import json, resource, sys\n"
        "from mlflow import MlflowClient\n"
        "from crm_predict.settings import Settings\n"
        "from crm_store.db import make_engine, session_factory\n"
        "from serving.batch import run_batch\n"
        "from benchmarks.bench_batch import AT\n"
        "s = Settings(data_dir=sys.argv[1], database_url=sys.argv[2] or None,"
        " mlflow_tracking_uri=sys.argv[3])\n"
        "c = MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.tracking_uri)\n"
        "with session_factory(make_engine(s.crm_url))() as session:\n"
        "    summary = run_batch(session, c, s, at=AT)\n"
        "out = summary.as_dict()\n"
        "out['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(json.dumps(out))\n"
    )
    args = [str(settings.data_dir), settings.database_url or "", settings.tracking_uri]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"batch job failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - start
    return result


def report(backend: str, result: dict) -> None:
    print(f"\n[{backend}] batch run {result['batch_run_id']}: {result['wall_seconds']:.1f} s wall "
          f"(job {result['seconds_total']:.1f} s), peak RSS {result['peak_rss_mb']:.0f} MB, "
          f"tasks created {result['tasks_created']:,}")  # fmt: skip
    for stage, seconds in result["seconds"].items():
        print(f"  {'run':<15} {stage:<9} {seconds:7.2f} s")
    for name, m in result["models"].items():
        stages = "  ".join(f"{k} {v:.2f}" for k, v in m["seconds"].items())
        print(f"  {name:<15} {m['entities']:>9,} entities  {m['tags_written']:>9,} tags  {stages}")


def _pg_database() -> str | None:
    """A throw-away PostgreSQL database URL, or None when the server is unreachable."""
    try:
        admin = make_engine(PG_ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
        name = f"crm_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except Exception as exc:  # noqa: BLE001
        print(f"PostgreSQL skipped: {type(exc).__name__}: {exc}")
        return None
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def main(n_customers: int = 100_000, backends: tuple[str, ...] = ("sqlite", "postgresql")) -> dict:
    """Figures per backend: demo/training seconds (setup, not measured) and the job's stages."""
    root = Path(os.environ.get("CRM_PREDICT_BENCH_DIR") or tempfile.mkdtemp(prefix="bench_batch_"))
    base = Settings(data_dir=root / f"sqlite_{n_customers}")
    base.ensure_dirs()
    figures: dict[str, dict] = {}
    setup = prepare_store(base, n_customers)
    setup["train_seconds"] = train_champions(base)
    print(
        f"setup ({n_customers:,} customers): " + ", ".join(f"{k} {v:.0f}" for k, v in setup.items())
    )
    for backend in backends:
        settings = base
        if backend == "postgresql":
            url = _pg_database()
            if url is None:
                continue
            settings = Settings(
                data_dir=root / f"pg_{n_customers}", database_url=url,
                mlflow_tracking_uri=base.tracking_uri, seed=base.seed,
            )  # fmt: skip
            settings.ensure_dirs()
            setup[f"{backend}_demo_seconds"] = prepare_store(settings, n_customers).get("demo_seconds", 0.0)  # fmt: skip
        result = run_job(settings)
        report(backend, result)
        figures[backend] = result
    figures["setup"] = setup
    figures["bench_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    chosen = tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else ("sqlite", "postgresql")
    main(n, chosen)
