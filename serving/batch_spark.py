"""The batch job on Apache Spark (``crm-predict batch score --engine spark``): same snapshot, same
features, same rules, same checkpoints as ``crm_predict.serving.batch``, spread over executors.

1. Driver: pre-flight (Java, a reachable ``--master``, a champion per model, the rules file)
   before anything is written; the CRM → Parquet export (``features/export.py``); the run row.
2. Features, one Spark task per range of entity ids (the single-machine job's ranges): the
   executor reads its range of the snapshot and runs the SAME pandas code
   (``crm_predict.features.scoring.scoring_frame`` and ``rule_context``), so features equal the
   single-machine ones by construction, and stages them as Parquet beside the snapshot.
3. Per model: ``mlflow.pyfunc.spark_udf`` scores the staged rows; per range
   (``applyInPandas``), ``writeback.prepare_write`` maps scores to tags, tasks and log rows.
4. Write-back, range by range, each range's rows and its ``batch_checkpoints`` row in one
   transaction: on PostgreSQL (or any server store) on the executors (the store's bulk writes:
   COPY into a staging table, then ``INSERT … ON CONFLICT``); on SQLite (one writer) from the
   driver, as ranges arrive. A killed run resumes: ranges whose checkpoint exists are skipped;
   a rerun finds every task by its dedup key and creates none.

The snapshot (``CRM_PREDICT_DATA_DIR``), the tracking server and the CRM store must be reachable
from every executor on a cluster; in ``local[N]`` they are this machine's.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
from crm_predict.crm_store.models import BatchCheckpoint
from crm_predict.serving.writeback import ModelVersionRef, prepare_write
from crm_predict.training.specs import spec
from mlflow import MlflowClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_predict.core.errors import UserError
from crm_predict.core.rules import MODEL_NAMES, Rules
from crm_predict.core.settings import Settings

MASTER_TIMEOUT_S = 5.0  # a spark:// or k8s:// master that does not answer within this is down
CONTEXT_PREFIX = "ctx__"  # staged rule-context columns: a context column never shadows a feature
OUTPUT_PREFIX = "out__"  # the model's outputs beside the features, until the scored frame is built
# Spark reads micro-second stamps (pandas writes nanoseconds); no stamp here has finer parts.
PARQUET = {"coerce_timestamps": "us", "allow_truncated_timestamps": True}
RESULT_SCHEMA = "chunk int, entities int, written boolean, payload binary"


@dataclass(frozen=True)
class Champion:
    """A champion as the Spark job needs it: its reference, a local copy of the model (what
    ``spark_udf`` ships to the executors) and its input columns."""

    ref: ModelVersionRef
    local_uri: str
    feature_names: list[str]


# --- Pre-flight: nothing is written before these pass -------------------------------------------


def java_runtime() -> str:
    """The ``java`` Spark will launch (``JAVA_HOME``'s, else the PATH's), or a UserError."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not found or not Path(found).exists():
        raise UserError(
            "the Spark engine needs a Java runtime (17 or newer) and found none"
            + (f" at JAVA_HOME={home}" if home else " on PATH")
            + ": install one (e.g. `apt-get install openjdk-17-jre-headless`) or set JAVA_HOME"
        )
    return found


def check_master(master: str, timeout: float = MASTER_TIMEOUT_S) -> str:
    """``master`` if Spark can use it: ``local[…]`` always; ``spark://`` (any of its HA hosts) and
    ``k8s://`` when a TCP connection opens within ``timeout`` seconds; ``yarn`` with a Hadoop
    configuration. Otherwise a UserError naming what failed."""
    if re.fullmatch(r"local(\[(\*|\d+)(,\d+)?\])?", master):
        return master
    if master == "yarn":
        if not (os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR")):
            raise UserError("--master yarn needs HADOOP_CONF_DIR or YARN_CONF_DIR set")
        return master
    match = re.fullmatch(r"(spark|k8s)://(?:https?://)?(.+)", master)
    if not match:
        raise UserError(
            f"--master {master!r} is not a Spark master URL: use local[N], "
            "spark://HOST:PORT, k8s://https://HOST:PORT or yarn"
        )
    scheme, hosts = match.groups()
    errors = []
    for host_port in hosts.rstrip("/").split(","):
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"--master {master!r}: {host_port!r} is not HOST:PORT")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return master
        except OSError as exc:
            errors.append(f"{host_port} ({exc.strerror or exc})")
    raise UserError(
        f"Spark master {master} cannot be reached within {timeout:g} s: {', '.join(errors)}; "
        "check the URL (the master's web UI shows it) and that this machine can reach it"
    )


def champions(client: MlflowClient, models: Sequence[str]) -> dict[str, Champion]:
    """Each model's champion, downloaded; a UserError naming every model without one (or with a
    classifier whose pyfunc does not give probabilities)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    out, missing, unusable = {}, [], []
    for name in models:
        try:
            version = client.get_model_version_by_alias(name, "champion")
        except MlflowException:
            missing.append(name)
            continue
        source = client.get_model_version_download_uri(name, version.version)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source, tracking_uri=client.tracking_uri
        )
        meta = Model.load(local)
        if spec(name).is_classifier:
            predict_fn = meta.flavors.get("python_function", {}).get("predict_fn", "predict")
            if predict_fn != "predict_proba":
                unusable.append(f"{name} v{version.version} (pyfunc calls {predict_fn!r})")
        tag = client.get_run(version.run_id).data.tags.get("feature_names")
        names = json.loads(tag) if tag else meta.signature.inputs.input_names()
        ref = ModelVersionRef(name=name, version=str(version.version), run_id=version.run_id)
        out[name] = Champion(ref, local, names)
    if missing:
        raise UserError(
            f"no champion registered for {', '.join(missing)} in {client.tracking_uri}: train and "
            "promote one (`crm-predict train …`), or leave the model out with --models"
        )
    if unusable:
        raise UserError(
            "champions the Spark engine cannot score: " + "; ".join(unusable) + " — classifiers "
            "must be logged with pyfunc_predict_fn='predict_proba' (as `crm-predict train` does)"
        )
    return out


def check_engine(master: str) -> None:
    """pyspark, Java and a usable ``master``: what a Spark run needs before it opens anything."""
    import importlib.util

    if importlib.util.find_spec("pyspark") is None:
        raise UserError("the Spark engine needs pyspark: install the extra `crm-predict[spark]`")
    java_runtime()
    check_master(master)


def preflight(client: MlflowClient, models: Sequence[str], master: str) -> dict[str, Champion]:
    """Everything a Spark run needs that a user can get wrong, checked before any write."""
    check_engine(master)
    return champions(client, models)


def spark_session(master: str = "local[2]", app_name: str = "crm-predict-batch"):
    """A Spark session with Arrow on (pandas UDFs), UTC session time zone (naive stamps), quiet
    logs and this interpreter for the Python workers (a cluster's must have the same packages)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.pyspark.python", os.environ["PYSPARK_PYTHON"])
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


# --- What the executors run ----------------------------------------------------------------------


@dataclass
class _FamilyPlan:
    """One family's features job (shipped to the executors): its reader and where to stage."""

    source: object  # crm_predict.serving.batch.SnapshotSource
    family: str
    names: list[str]
    at: datetime
    rules: Rules
    changed: dict[str, set[int] | None]
    staging: str


def _staged_range(plan: _FamilyPlan, item: tuple[int, int | None]) -> list[tuple[str, int, int]]:
    """One range's features and rule context per model, as the single-machine job computes
    them (``batch._range_chunks``), staged as ``<staging>/<model>/range-<n>.parquet``."""
    from crm_predict.serving.batch import rule_context

    index, high = item
    current = next(plan.source.ranges(plan.family, plan.names, plan.at, lambda h: h != high), None)
    if current is None:
        return []
    contexts: dict[str, pd.DataFrame] = {}
    out = []
    for name in plan.names:
        features = current.features(name)
        if plan.changed[name] is not None:
            features = features[features["entity_id"].isin(plan.changed[name])]
        features = features.sort_values("entity_id", kind="stable").reset_index(drop=True)
        entity = spec(name).entity
        if entity not in contexts:
            context = rule_context(current.tables, name, plan.at, plan.rules)
            contexts[entity] = context.drop_duplicates("entity_id").set_index("entity_id")
        if not len(features):
            continue
        rows = contexts[entity].reindex(features["entity_id"].to_numpy()).reset_index(drop=True)
        staged = pd.concat([features, rows.add_prefix(CONTEXT_PREFIX)], axis=1)
        for column in staged.columns:  # categories as text: one Parquet type for every range
            if isinstance(staged[column].dtype, pd.CategoricalDtype):
                staged[column] = staged[column].astype(object).where(staged[column].notna(), None)
        staged.insert(0, "chunk", index)
        target = Path(plan.staging) / name
        target.mkdir(parents=True, exist_ok=True)
        staged.to_parquet(target / f"range-{index:06d}.parquet", index=False, **PARQUET)
        out.append((name, index, len(staged)))
    return out


def _conform(files: Sequence[Path]) -> None:
    """Rewrite the staged files of one model that differ from their unified schema (an integer
    column with a gap in one range is float there): Spark reads a directory in one schema. On
    the driver: at scale a range whose column has no gap is rare, and a file is one range."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(f).remove_metadata() for f in files]
    if len(set(schemas)) < 2:
        return
    unified = pa.unify_schemas(schemas, promote_options="permissive")
    for path, schema in zip(files, schemas, strict=True):
        if not schema.equals(unified):
            pq.write_table(pq.read_table(path).cast(unified), path, **PARQUET)


@dataclass
class _WritePlan:
    """One model's write-back job (shipped to the executors)."""

    ref: ModelVersionRef
    run_id: int
    at: datetime
    rules: Rules
    medians: tuple[float, float, float] | None
    owners: dict[str, int]
    from_features: list[str]
    outputs: list[str]  # the scoring columns besides the features (score, pyfunc outputs)
    crm_url: str
    dialect: str
    on_executors: bool


def _scored_frame(plan: _WritePlan, group: pd.DataFrame) -> pd.DataFrame:
    """The scored frame the single-machine job builds for a chunk (``batch._put_chunk``):
    entity, score and outputs, then the rule context, then the features its rules read."""
    group = group.sort_values("entity_id", ignore_index=True)
    scored = group[["entity_id"]].copy()
    for name in plan.outputs:  # the single-machine order: the outputs, then the score
        scored[name] = group[f"{OUTPUT_PREFIX}{name}"]
    if "best_slots" in scored.columns:  # Arrow gives arrays; the rules expect lists
        scored["best_slots"] = scored["best_slots"].map(
            lambda v: v if v is None else [int(s) for s in v]
        )
    context = [c for c in group.columns if c.startswith(CONTEXT_PREFIX)]
    rows = group[context].rename(columns=lambda c: c[len(CONTEXT_PREFIX) :])
    scored = pd.concat([scored, rows], axis=1)
    extra = [c for c in plan.from_features if c not in scored.columns]
    return pd.concat([scored, group[extra]], axis=1)


_ENGINES: dict[str, object] = {}  # per executor process: one pool per store, made on first use


def _write_range(plan: _WritePlan, group: pd.DataFrame) -> pd.DataFrame:
    """One range of one model: its prepared write-back, committed here with its checkpoint
    (``on_executors``, once: a retried task writes nothing twice) or pickled for the driver
    to commit."""
    chunk = int(group["chunk"].iloc[0])
    scored = _scored_frame(plan, group)
    prepared = prepare_write(
        plan.ref, scored, plan.at, plan.dialect, rfm_medians=plan.medians, rules=plan.rules,
        default_owners=plan.owners,
    )  # fmt: skip
    checkpoint = dict(
        batch_run_id=plan.run_id, model_name=plan.ref.name, model_version=plan.ref.version,
        chunk=chunk, last_entity_id=int(scored["entity_id"].iloc[-1]), entities=len(scored),
    )  # fmt: skip
    payload, written = pickle.dumps((prepared, checkpoint)), False
    if plan.on_executors:
        from crm_predict.crm_store.db import make_engine, session_factory
        from crm_predict.serving.batch import commit_chunk

        if plan.crm_url not in _ENGINES:
            _ENGINES[plan.crm_url] = make_engine(plan.crm_url)
        with session_factory(_ENGINES[plan.crm_url])() as session:
            commit_chunk(session, prepared, checkpoint, once=True)
        payload, written = b"", True
    return pd.DataFrame(
        {"chunk": [chunk], "entities": [len(scored)], "written": [written], "payload": [payload]}
    )


# --- Scoring ---------------------------------------------------------------------------------------


def score_spark(spark, champion: Champion, features):
    """``features`` with ``score`` (and a pyfunc's other outputs) added by the champion through
    ``mlflow.pyfunc.spark_udf``, each as ``OUTPUT_PREFIX + name`` (a model's output may share a
    feature's name); returns the frame and the output names."""
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    model = spec(champion.ref.name)
    inputs = F.struct(*[F.col(c) for c in champion.feature_names])
    if model.is_classifier:
        udf = mlflow.pyfunc.spark_udf(
            spark, champion.local_uri, result_type="array<double>", env_manager="local"
        )
        return features.withColumn(f"{OUTPUT_PREFIX}score", udf(inputs)[1]), ["score"]
    udf = mlflow.pyfunc.spark_udf(
        spark, champion.local_uri, result_type=model.pyfunc_schema, env_manager="local"
    )
    out = features.withColumn("__out", udf(inputs))
    names = [f.name for f in out.schema["__out"].dataType.fields if f.name != "entity_id"]
    out = out.select(
        "*",
        *[F.col(f"__out.{n}").alias(f"{OUTPUT_PREFIX}{n}") for n in names],
        F.col(f"__out.{model.score_output}").cast("double").alias(f"{OUTPUT_PREFIX}score"),
    ).drop("__out")
    return out, [*[n for n in names if n != "score"], "score"]


# --- The run ---------------------------------------------------------------------------------------


@dataclass
class SparkTimes:
    """Driver-side seconds per stage of a Spark run (the summary's run-level ``seconds``)."""

    seconds: Counter = field(default_factory=Counter)

    def add(self, stage: str, started: float) -> None:
        self.seconds[stage] += time.perf_counter() - started


def _done_chunks(session: Session, run_id: int, name: str) -> set[int]:
    rows = session.scalars(
        select(BatchCheckpoint.chunk).where(
            BatchCheckpoint.batch_run_id == run_id, BatchCheckpoint.model_name == name
        )
    )
    return set(rows)


def _ranges(source, family: str) -> list[tuple[int, int | None]]:
    """The family's ranges as the single-machine job cuts them: (index, end id); deals: one."""
    if family == "deal":
        return [(0, None)]
    table = {"contact": "contacts", "lead": "leads"}[family]
    return [(i, high) for i, (_, high) in enumerate(source.edges(table))]


def _stage_features(spark, source, family, names, at, rules, changed, staging, todo, times):
    """Run the family's features job over the ranges in ``todo``; conform the staged files."""
    t = time.perf_counter()
    plan = _FamilyPlan(source, family, names, at, rules, changed, str(staging))
    staged = []
    if todo:
        rdd = spark.sparkContext.parallelize(todo, len(todo))
        staged = rdd.flatMap(lambda item: _staged_range(plan, item)).collect()
    times.add("features", t)
    t = time.perf_counter()
    for name in names:
        _conform(sorted((staging / name).glob("range-*.parquet")))
    times.add("conform", t)
    return staged


def run_spark_batch(
    session: Session,
    client: MlflowClient,
    settings: Settings,
    models: Sequence[str] = MODEL_NAMES,
    at: datetime | None = None,
    since: datetime | None = None,
    *,
    master: str = "local[*]",
    spark=None,
    export: bool = True,
    rules: Rules | None = None,
    log_to_mlflow: bool = True,
    preflighted: dict[str, Champion] | None = None,
):
    """``crm_predict.serving.batch.run_batch`` on Spark: the same tags, tasks and prediction log,
    committed range by range with the same kind of checkpoints. ``spark``: a session to use
    (else one on ``master``, stopped at the end); ``preflighted``: the champions of a
    ``preflight`` the caller ran. Returns a ``batch.BatchSummary``."""
    from crm_predict.serving import batch as B

    rules, rules_file = B.run_rules(settings, models, rules)
    started, times = time.perf_counter(), SparkTimes()
    champs = preflighted or preflight(client, models, master if spark is None else "local")
    times.add("preflight", started)

    t = time.perf_counter()
    own_session = False
    if spark is None:  # a session already running in this process is used (and left running)
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
        own_session = spark is None
        spark = spark or spark_session(master)
    times.add("spark_start", t)
    try:
        # Its own run key: a Spark run's checkpoints are per range, not a running last id, so
        # the single-machine job must not resume it (nor it the single-machine job's).
        run, summary = B.start_run(session, [f"spark:{','.join(models)}"], at, rules, rules_file)
        at, run_id = run.scored_at, run.id
        t = time.perf_counter()
        if export:
            from crm_predict.features.export import export_snapshots

            export_snapshots(session, settings, columns={})
            session.commit()
        times.add("export", t)
        source = B.SnapshotSource(settings, models, B.store_users(session))
        changed = {m: set(B.changed_entities(session, m, since)) if since else None for m in models}  # fmt: skip
        done = {m: _done_chunks(session, run_id, m) for m in models}
        owners, summary.rule_errors = B.default_owners(rules, source.users)
        if any(spec(m).entity == "deal" for m in models):
            t = time.perf_counter()
            summary.account_tags = B.write_account_tiers(session, source.accounts(), at, rules)
            times.add("account_tiers", t)
        session.commit()
        dialect = session.get_bind().dialect.name
        staging = settings.data_dir / "spark_staging" / f"run-{run_id}"
        order = sorted(models, key=lambda m: (B.SCORING_ORDER.index(spec(m).entity), MODEL_NAMES.index(m)))  # fmt: skip
        for family in dict.fromkeys(B.FAMILY[spec(m).entity] for m in order):
            names = [m for m in order if B.FAMILY[spec(m).entity] == family]
            t = time.perf_counter()
            _, medians = source.prepass(family, names, at, rules, changed)
            ranges = _ranges(source, family)
            times.add("prepass", t)
            todo = [r for r in ranges if not all(r[0] in done[n] for n in names)]
            _stage_features(spark, source, family, names, at, rules, changed, staging, todo, times)  # fmt: skip
            for name in names:
                _score_and_write(
                    spark, session, settings, champs[name], name, staging, done[name], run_id,
                    at, rules, medians, owners, dialect, summary, times,
                )  # fmt: skip
        shutil.rmtree(staging, ignore_errors=True)
    finally:
        if own_session:
            spark.stop()
    for name in models:
        count, _, model_run = B.done_so_far(session, run_id, name)
        model_run.chunks, model_run.version = count, champs[name].ref.version
        summary.models.append(model_run)
    summary.seconds = times.seconds
    summary.seconds_total = time.perf_counter() - started
    B.finish_run(session, client, run, summary, log_to_mlflow)
    return summary


def _score_and_write(
    spark, session, settings, champion, name, staging, done, run_id, at, rules, medians,
    owners, dialect, summary, times,
) -> None:  # fmt: skip
    """One model: score its staged ranges on Spark, prepare and commit each range's write-back."""
    from crm_predict.serving.batch import check_tag_rules, commit_chunk
    from pyspark.sql import functions as F

    if not any((staging / name).glob("range-*.parquet")):
        return
    t = time.perf_counter()
    features = spark.read.parquet(str(staging / name))
    if done:
        features = features.where(~F.col("chunk").isin(sorted(done)))
    scored, outputs = score_spark(spark, champion, features)
    context = [c[len(CONTEXT_PREFIX) :] for c in features.columns if c.startswith(CONTEXT_PREFIX)]
    feature_columns = [c for c in features.columns if c != "chunk" and not c.startswith(CONTEXT_PREFIX)]  # fmt: skip
    available = {*feature_columns, *context, "score"}
    model_rules, errors = check_tag_rules(rules, name, available)
    summary.rule_errors.extend(errors)
    wanted = {c for r in model_rules.tag_rules(name) for c in r.condition.columns}
    wanted |= {c for c in spec(name).tag_features if c in feature_columns}
    plan = _WritePlan(
        champion.ref, run_id, at, model_rules, medians, owners,
        sorted(wanted - set(context) - {"entity_id", "score"}), outputs, settings.crm_url, dialect,
        on_executors=dialect != "sqlite",
    )  # fmt: skip
    results = scored.groupBy("chunk").applyInPandas(
        lambda group: _write_range(plan, group), schema=RESULT_SCHEMA
    )
    for row in results.toLocalIterator(prefetchPartitions=True):
        if not row["written"]:
            prepared, checkpoint = pickle.loads(row["payload"])
            commit_chunk(session, prepared, checkpoint, once=True)  # SQLite: the driver writes
    times.add(f"{name}_score_write", t)
