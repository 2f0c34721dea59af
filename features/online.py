"""Online features for one entity or a batch, through Feast's ``get_online_features``."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from feast import FeatureStore
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

from crm_predict.errors import UserError
from features.definitions import (
    ENTITIES,
    ENTITY_OF_MODEL,
    RULE_SCORE_VIEW,
    SERVICES,
    check_model,
    service_name,
)


class UnknownEntityError(UserError):
    """Entity ids the online store has no features for (never materialized or not in the CRM)."""

    def __init__(self, model_name: str, entity_ids: list[int]):
        self.entity_ids = entity_ids
        shown = ", ".join(str(i) for i in entity_ids[:20])
        more = f" (+{len(entity_ids) - 20} more)" if len(entity_ids) > 20 else ""
        super().__init__(
            f"unknown {ENTITY_OF_MODEL[model_name]} id(s) for {model_name}: {shown}{more}"
        )


def _ids(entity_ids: int | Iterable[int]) -> list[int]:
    if isinstance(entity_ids, int | str):
        entity_ids = [entity_ids]
    try:
        ids = [int(i) for i in entity_ids]
    except (TypeError, ValueError) as exc:
        raise UserError(f"entity ids must be integers: {exc}") from None
    if not ids:
        raise UserError("no entity ids given")
    return ids


def online_features(
    store: FeatureStore, model_name: str, entity_ids: int | Iterable[int]
) -> pd.DataFrame:
    """``entity_id`` + the model's FeatureService features, one row per id in the given order."""
    check_model(model_name)
    ids = _ids(entity_ids)
    key = ENTITIES[ENTITY_OF_MODEL[model_name]]
    response = store.get_online_features(
        features=store.get_feature_service(service_name(model_name)),
        entity_rows=[{key: i} for i in ids],
    )
    # An id is unknown when none of the stored (not on-demand) features was found for it. Redis
    # reports a missing hash as present with empty values and a zero timestamp, so both count.
    stored = {f for view, feats in SERVICES[model_name] if view != RULE_SCORE_VIEW for f in feats}
    names = list(response.proto.metadata.feature_names.val)
    found = [False] * len(ids)
    for name, column in zip(names, response.proto.results, strict=True):
        if name in stored:
            for row, (status, ts) in enumerate(zip(column.statuses, column.event_timestamps, strict=True)):  # fmt: skip
                found[row] = found[row] or (status == FieldStatus.PRESENT and ts.seconds > 0)
    unknown = [i for i, ok in zip(ids, found, strict=True) if not ok]
    if unknown:
        raise UnknownEntityError(model_name, unknown)
    frame = response.to_df()
    features = [f for _, feats in SERVICES[model_name] for f in feats]
    frame = frame.rename(columns={key: "entity_id"})
    return frame[["entity_id", *features]]
