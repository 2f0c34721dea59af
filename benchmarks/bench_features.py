"""Feature store benchmark: materialize 1M customers x 20 features into SQLite and Redis with the bulk
path, Feast's stock path on a smaller sample, and online read latency (1 and 100 entities).

Run: ``python -m benchmarks.bench_features [n_entities]`` (or ``make bench``). Uses a temporary
directory and a throw-away Feast project; Redis keys of that project are deleted afterwards.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from crm_predict.features.materialize import materialize
from crm_predict.features.store import feature_store
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

from crm_predict.core.settings import Settings

AS_OF = datetime(2026, 6, 30)
N_FLOAT, N_INT = 14, 5  # + 1 string = 20 features
STOCK_SAMPLE = 20_000


def synthetic_view(path: Path, n: int, seed: int = 42) -> tuple[Entity, FeatureView]:
    """A customer view shaped like the real ones: floats, counts and one category, 2 rows per id."""
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1, dtype=np.int64)
    rows = {"customer_id": np.concatenate([ids, ids[: n // 10]])}
    m = len(rows["customer_id"])
    rows["event_timestamp"] = np.where(
        np.arange(m) < n, np.datetime64(AS_OF), np.datetime64(AS_OF - timedelta(days=90))
    ).astype("datetime64[ns]")
    for i in range(N_FLOAT):
        values = rng.gamma(2.0, 50.0, m)
        values[rng.random(m) < 0.02] = np.nan  # some missing values, as in real features
        rows[f"f{i}"] = values
    for i in range(N_INT):
        rows[f"n{i}"] = rng.poisson(3.0, m).astype(np.int64)
    rows["segment"] = rng.choice(np.array(["north", "south", "east", "west"], dtype=object), m)
    pd.DataFrame(rows).to_parquet(path, index=False)
    entity = Entity(name="bench_customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    schema = [Field(name=f"f{i}", dtype=Float64, description="synthetic measure") for i in range(N_FLOAT)]  # fmt: skip
    schema += [
        Field(name=f"n{i}", dtype=Int64, description="synthetic count") for i in range(N_INT)
    ]
    schema.append(Field(name="segment", dtype=String, description="synthetic category"))
    view = FeatureView(
        name="bench_customer_features",
        entities=[entity],
        ttl=timedelta(0),
        schema=schema,
        source=FileSource(path=str(path), timestamp_field="event_timestamp"),
        online=True,
    )
    return entity, view


def _latency(store, ids: np.ndarray, batch: int, reps: int, seed: int = 1) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    features = [f"bench_customer_features:{f.name}" for f in store.get_feature_view("bench_customer_features").features]  # fmt: skip
    times = []
    for _ in range(reps):
        rows = [{"customer_id": int(i)} for i in rng.choice(ids, batch, replace=False)]
        start = time.perf_counter()
        store.get_online_features(features=features, entity_rows=rows).to_dict()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def run_backend(backend: str, n: int, workdir: Path, redis_url: str) -> dict[str, float]:
    settings = Settings(data_dir=workdir / backend, online_store=backend, redis_url=redis_url)
    settings.ensure_dirs()
    project = f"bench_{uuid.uuid4().hex[:8]}"
    entity, view = synthetic_view(settings.feature_dir / "bench.parquet", n)
    store = feature_store(settings, project=project)
    store.apply([entity, view])
    out: dict[str, float] = {}
    try:
        start, cpu = time.perf_counter(), time.process_time()
        counts = materialize(store, AS_OF, views=[view.name])
        seconds = time.perf_counter() - start
        out["bulk_entities"] = counts[view.name]
        out["bulk_seconds"] = seconds
        out["bulk_cpu_seconds"] = time.process_time() - cpu
        out["bulk_entities_per_s"] = counts[view.name] / seconds

        # Feast's stock path on a sample, in its own project so it writes into empty tables.
        sample_settings = Settings(data_dir=workdir / f"{backend}_stock", online_store=backend, redis_url=redis_url)  # fmt: skip
        sample_settings.ensure_dirs()
        sample_entity, sample_view = synthetic_view(sample_settings.feature_dir / "bench.parquet", STOCK_SAMPLE)  # fmt: skip
        stock_store = feature_store(sample_settings, project=f"{project}_stock", bulk=False)
        stock_store.apply([sample_entity, sample_view])
        start = time.perf_counter()
        stock_store.materialize(AS_OF - timedelta(days=365), AS_OF + timedelta(seconds=1))
        seconds = time.perf_counter() - start
        out["stock_entities"] = STOCK_SAMPLE
        out["stock_seconds"] = seconds
        out["stock_entities_per_s"] = STOCK_SAMPLE / seconds
        stock_ids = np.arange(1, STOCK_SAMPLE + 1)
        _latency(stock_store, stock_ids, 1, 20)  # warm-up
        out["stock_read1_p50_ms"], out["stock_read1_p99_ms"] = _latency(stock_store, stock_ids, 1, 300)  # fmt: skip
        out["stock_read100_p50_ms"], out["stock_read100_p99_ms"] = _latency(stock_store, stock_ids, 100, 100)  # fmt: skip

        ids = np.arange(1, n + 1)
        _latency(store, ids, 1, 20)  # warm-up
        out["read1_p50_ms"], out["read1_p99_ms"] = _latency(store, ids, 1, 300)
        out["read100_p50_ms"], out["read100_p99_ms"] = _latency(store, ids, 100, 100)
    finally:
        if backend == "redis":
            _delete_redis_project(redis_url, [project, f"{project}_stock"])
    return out


def _delete_redis_project(redis_url: str, projects: list[str]) -> None:
    """Remove only this run's keys (Feast keys end with the project name)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    for project in projects:
        batch = []
        for key in client.scan_iter(match=f"*{project}", count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                client.delete(*batch)
                batch = []
        if batch:
            client.delete(*batch)


def main(n: int | None = None) -> dict[str, dict[str, float]]:
    n = n or (int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 1_000_000)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        for backend in ("sqlite", "redis"):
            results[backend] = run_backend(backend, n, Path(tmp), Settings().redis_url)
    print(f"Feature store: materialize {n:,} entities x 20 features (bulk path, wall and CPU of this "
          f"process); Feast's stock materialize on {STOCK_SAMPLE:,} entities; online reads")  # fmt: skip
    print(f"{'':8} {'bulk ent/s':>11} {'bulk s':>7} {'cpu s':>6} {'stock ent/s':>12} {'read1 p50/p99 ms':>17} {'read100 p50/p99 ms':>19}")  # fmt: skip
    for backend, r in results.items():
        print(
            f"{backend:8} {r['bulk_entities_per_s']:>11,.0f} {r['bulk_seconds']:>7.1f} "
            f"{r['bulk_cpu_seconds']:>6.1f} {r['stock_entities_per_s']:>12,.0f} "
            f"{r['read1_p50_ms']:>8.2f}/{r['read1_p99_ms']:<8.2f} {r['read100_p50_ms']:>9.2f}/{r['read100_p99_ms']:<9.2f}"
        )  # fmt: skip
    print("Feast's stock online stores (20k-entity sample), same run:")
    for backend, r in results.items():
        print(
            f"{backend:8} read1 p50/p99 {r['stock_read1_p50_ms']:.2f}/{r['stock_read1_p99_ms']:.2f} ms, "
            f"read100 p50/p99 {r['stock_read100_p50_ms']:.2f}/{r['stock_read100_p99_ms']:.2f} ms"
        )
    return results


if __name__ == "__main__":
    main()
