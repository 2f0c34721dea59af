"""The batch job's scale-out path on Apache Spark (optional extra ``spark``).

Same models, same rules, different engine: Spark reads the scoring features from Parquet, scores
each partition with the champion through ``mlflow.pyfunc.spark_udf`` and maps scores to tags with
``crm_predict.serving.writeback.tag_frame`` inside ``mapInPandas``, so every rule still lives in one place. The
scored rows and tags land as Parquet; ``write_outputs`` loads them into the CRM store (tasks and
prediction log derived on the driver from the scored rows), one transaction per model, through the
same repository upserts as the single-machine job.

    spark = spark_session("local[2]")          # or a cluster master
    paths = run_spark_batch(spark, client, settings, features_dir, out_dir, at)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pandas as pd
from crm_predict.crm_store.repository import TAG_COLUMNS, create_tasks, log_predictions, upsert_tags
from crm_predict.serving.writeback import ModelVersionRef, prediction_frame, tag_frame, task_specs
from crm_predict.training.specs import spec
from mlflow import MlflowClient
from sqlalchemy.orm import Session

from crm_predict.core.rules import MODEL_NAMES, rfm_medians

TAG_SCHEMA = (
    "entity_type string, entity_id bigint, name string, value string, model_name string, "
    "model_version string, run_id string, scored_at timestamp"
)


def spark_session(master: str = "local[2]", app_name: str = "crm-predict-batch"):
    """A Spark session with Arrow on (pandas UDFs), UTC session time zone (naive stamps) and this
    interpreter for the Python workers."""
    import os

    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable  # local mode reads the workers' python from here
    return (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.pyspark.python", sys.executable)  # workers need this venv's packages
        .getOrCreate()
    )


def champion(client: MlflowClient, name: str) -> tuple[ModelVersionRef, str]:
    """The champion's version reference and a local copy of its model (what ``spark_udf`` ships to
    the workers, which know nothing of this tracking server)."""
    import mlflow.artifacts

    version = client.get_model_version_by_alias(name, "champion")
    ref = ModelVersionRef(name=name, version=str(version.version), run_id=version.run_id)
    source = client.get_model_version_download_uri(name, version.version)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=source, tracking_uri=client.tracking_uri
    )
    return ref, local


def score_spark(spark, model_uri: str, model_name: str, features, feature_names: Sequence[str]):
    """``entity_id``, ``score`` (+ the pyfunc's outputs) for a Spark DataFrame of features: a
    classifier's pyfunc gives ``predict_proba``'s two columns, another its spec's ``pyfunc_schema``."""
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    model = spec(model_name)
    if model.is_classifier:
        from mlflow.models import Model

        predict_fn = Model.load(model_uri).flavors["python_function"].get("predict_fn", "predict")
        if predict_fn != "predict_proba":
            raise ValueError(
                f"{model_name}: the pyfunc flavour calls {predict_fn!r}; classifiers must be logged "
                "with pyfunc_predict_fn='predict_proba' to be scored on Spark"
            )
        udf = mlflow.pyfunc.spark_udf(
            spark, model_uri, result_type="array<double>", env_manager="local"
        )
        return features.select(
            F.col("entity_id").cast("bigint"),
            udf(F.struct(*[F.col(c) for c in feature_names]))[1].alias("score"),
        )
    udf = mlflow.pyfunc.spark_udf(
        spark, model_uri, result_type=model.pyfunc_schema, env_manager="local"
    )
    out = features.select(
        F.col("entity_id").cast("bigint"),
        udf(F.struct(*[F.col(c) for c in feature_names])).alias("out"),
    )
    return out.select("entity_id", "out.*").withColumn(
        "score", F.col(model.score_output).cast("double")
    )


def tags_spark(scored, model: ModelVersionRef, scored_at: datetime, medians=None):
    """Tags for a scored Spark DataFrame (joined with the rule context), partition by partition."""

    def to_tags(batches):
        for batch in batches:
            yield tag_frame(model, batch, scored_at, medians)[TAG_COLUMNS]

    return scored.mapInPandas(to_tags, schema=TAG_SCHEMA)


def run_spark_batch(
    spark,
    client: MlflowClient,
    features_dir: Path,
    contexts: dict[str, pd.DataFrame],
    out_dir: Path,
    at: datetime,
    models: Sequence[str] = MODEL_NAMES,
) -> dict[str, dict[str, Path]]:
    """Score ``features_dir/<model>.parquet`` with each champion on Spark; write tags, scored rows
    and prediction log as Parquet under ``out_dir/<model>/``. ``contexts`` holds each model's rule
    context (``crm_predict.serving.batch.rule_context``), broadcast to the workers through a join."""
    import json

    from pyspark.sql import functions as F

    paths: dict[str, dict[str, Path]] = {}
    for name in models:
        ref, uri = champion(client, name)
        feature_names = json.loads(client.get_run(ref.run_id).data.tags["feature_names"])
        features = spark.read.parquet(str(features_dir / f"{name}.parquet"))
        scored = score_spark(spark, uri, name, features, feature_names)
        context = contexts[name]
        medians = None
        if spec(name).rfm_medians and len(context):
            medians = rfm_medians(
                context["recency_days"], context["frequency"], context["monetary"]
            )
        scored = scored.join(F.broadcast(spark.createDataFrame(context)), "entity_id", "left")
        scored = scored.cache()
        target = {k: out_dir / name / k for k in ("scored", "tags")}
        scored.write.mode("overwrite").parquet(str(target["scored"]))
        tags_spark(scored, ref, at, medians).write.mode("overwrite").parquet(str(target["tags"]))
        scored.unpersist()
        paths[name] = target
    return paths


def write_outputs(
    session: Session,
    client: MlflowClient,
    paths: dict[str, dict[str, Path]],
    at: datetime,
    source: str = "batch",
) -> dict[str, dict[str, int]]:
    """Load the Spark job's Parquet outputs into the CRM store: tags (history on change), tasks
    (dedup by key, evaluated on the driver from the scored rows) and the prediction log."""
    counts = {}
    for name, target in paths.items():
        ref, _ = champion(client, name)
        tags = pd.read_parquet(target["tags"])
        scored = pd.read_parquet(target["scored"]).sort_values("entity_id", ignore_index=True)
        if "best_slots" in scored.columns:
            scored["best_slots"] = scored["best_slots"].map(list)
        counts[name] = {
            "tags": upsert_tags(session, tags, at),
            "tasks": create_tasks(session, task_specs(name, scored, at), at),
            "predictions": log_predictions(session, prediction_frame(ref, scored, at, source)),
        }
        session.commit()
    return counts
