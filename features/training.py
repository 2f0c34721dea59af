"""Training sets: each model's prediction rows and labels, with its FeatureService's features joined
point-in-time by Feast (the latest feature row stamped at or before each prediction time)."""

from __future__ import annotations

import pandas as pd
from crm_predict.features.definitions import (
    ENTITIES,
    ENTITY_OF_MODEL,
    check_excluded,
    check_model,
    feature_names,
    service_name,
)
from crm_predict.features.export import labels_dir, load_snapshots
from crm_predict.features.store import feature_store
from feast import FeatureStore

from crm_predict.core.errors import UserError
from crm_predict.core.settings import Settings

TS = "event_timestamp"


def _naive_utc(ts: pd.Series) -> pd.Series:
    ts = pd.to_datetime(ts)
    if ts.dt.tz is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return ts.astype("datetime64[ns]")


def protected_attribute(
    settings: Settings, model_name: str, tables: dict[str, pd.DataFrame], ids: pd.Series
) -> pd.Series | None:
    """The protected attribute (default gender) of each entity's contact, when the CRM has it."""
    column = settings.protected_attribute
    contacts = tables["contacts"]
    if column not in contacts.columns:
        return None
    by_contact = contacts.set_index("id")[column]
    entity = ENTITY_OF_MODEL[model_name]
    if entity in ("customer", "contact"):
        contact_ids = ids
    else:
        owner = tables["leads" if entity == "lead" else "deals"].set_index("id")["contact_id"]
        contact_ids = ids.map(owner)
    return contact_ids.map(by_contact).astype(object).where(lambda s: s.notna(), None)


def service(store: FeatureStore, model_name: str):
    """The model's FeatureService from the registry (apply must have run)."""
    try:
        return store.get_feature_service(service_name(model_name))
    except Exception as exc:  # Feast raises its own not-found error types per registry backend
        raise UserError(
            f"feature service {service_name(model_name)} is not registered: run "
            "`crm-predict features export` then `crm-predict features apply`"
        ) from exc


def training_set(
    settings: Settings, model_name: str, store: FeatureStore | None = None
) -> pd.DataFrame:
    """``entity_id, event_timestamp, label``, the FeatureService's features (unprefixed) and the
    protected attribute column when the entity has one; only rows whose label is known."""
    check_model(model_name)
    names = feature_names(model_name, settings)
    path = labels_dir(settings) / f"{model_name}.parquet"
    if not path.exists():
        raise UserError(f"missing source file {path}: run `crm-predict features export` first")
    rows = pd.read_parquet(path)
    rows = rows[rows["label"].notna()].reset_index(drop=True)
    rows["label"] = rows["label"].astype("int64")
    rows[TS] = _naive_utc(rows[TS])

    store = store or feature_store(settings)
    key = ENTITIES[ENTITY_OF_MODEL[model_name]]
    entity_df = pd.DataFrame({key: rows["entity_id"].astype("int64"), TS: rows[TS]})
    if entity_df.empty:
        joined = pd.DataFrame(columns=[key, TS, *names])
    else:
        job = store.get_historical_features(
            entity_df=entity_df, features=service(store, model_name), full_feature_names=False
        )
        joined = job.to_df()
        joined[TS] = _naive_utc(joined[TS])
    out = rows.merge(
        joined.rename(columns={key: "entity_id"}), on=["entity_id", TS], how="left", validate="1:1"
    )
    check_excluded(model_name, [c for c in out.columns if c in names], settings.excluded_features)
    columns = ["entity_id", TS, "label", *names]
    attribute = protected_attribute(
        settings, model_name, load_snapshots(settings), out["entity_id"]
    )
    if attribute is not None:
        out[settings.protected_attribute] = attribute.to_numpy()
        columns.append(settings.protected_attribute)
    return out[columns].sort_values([TS, "entity_id"], ignore_index=True)


def demo_training_set(
    settings: Settings, model_name: str
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The demo CRM's training set and the generator's truth (None when it was not saved)."""
    truth_path = settings.demo_truth_dir / f"{model_name}.parquet"
    truth = pd.read_parquet(truth_path) if truth_path.exists() else None
    return training_set(settings, model_name), truth
