"""Online features for one entity or a batch: Feast's ``get_online_features`` (``online_features``),
and ``ServiceReader``, the same FeatureService read resolved once for the online API's hot path."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
from crm_predict.features.definitions import (
    ENTITIES,
    ENTITY_OF_MODEL,
    RULE_SCORE_VIEW,
    SERVICES,
    check_model,
    service_name,
)
from feast import FeatureStore, FeatureView, OnDemandFeatureView
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type

from crm_predict.core.errors import UserError


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


@dataclass
class ServiceReader:
    """A model's FeatureService resolved from the registry once, read without Feast's per-call
    planning: each stored view through the provider's ``online_read`` (SQLite or Redis alike),
    each on-demand view through its own registered transformation. Same rows as
    ``online_features`` (checked in the tests) at a fraction of the cost for one entity.

    The views carry no TTL (see ``crm_predict.features.definitions``), so no max-age filtering is applied.
    """

    store: FeatureStore
    model_name: str
    join_key: str
    views: list[tuple[FeatureView, list[str]]]
    on_demand: list[tuple[OnDemandFeatureView, list[str], list[str]]]  # (view, inputs, outputs)
    features: list[str]

    @classmethod
    def open(cls, store: FeatureStore, model_name: str) -> ServiceReader:
        check_model(model_name)
        service = store.get_feature_service(service_name(model_name))
        views, on_demand, features = [], [], []
        for projection in service.feature_view_projections:
            names = [f.name for f in projection.features]
            features += names
            if projection.name in {v.name for v in store.list_on_demand_feature_views()}:
                odfv = store.get_on_demand_feature_view(projection.name)
                inputs = [
                    f.name
                    for p in odfv.source_feature_view_projections.values()
                    for f in p.features
                ]
                on_demand.append((odfv, inputs, names))
            else:
                views.append((store.get_feature_view(projection.name), names))
        # On-demand inputs the service does not list itself are read too (and not returned).
        stored = {name for _, names in views for name in names}
        for odfv, _, _ in on_demand:
            for source in odfv.source_feature_view_projections.values():
                hidden = [f.name for f in source.features if f.name not in stored]
                if hidden:
                    views.append((store.get_feature_view(source.name), hidden))
                    stored.update(hidden)
        key = ENTITIES[ENTITY_OF_MODEL[model_name]]
        return cls(store, model_name, key, views, on_demand, features)

    def read(self, entity_ids: int | Iterable[int], typed: bool = True) -> pd.DataFrame:
        """``entity_id`` + the FeatureService features, one row per id in the given order.

        ``typed=False`` gives the same values in one object block, without pandas inferring a
        dtype per column (a tenth of the cost for one row; the online API's single-id path):
        each value as Feast gives it (Python int, float, str, bool or None). A read holding a
        value of another kind (lists, timestamps) comes back typed anyway."""
        ids = _ids(entity_ids)
        columns, plain = self._columns(ids)
        names = self._names
        if typed or not plain:
            return pd.DataFrame({name: columns[name] for name in names})
        block = np.empty((len(ids), len(names)), dtype=object)
        for j, name in enumerate(names):
            block[:, j] = columns[name]
        return pd.DataFrame(block, columns=names, dtype=object, copy=False)

    @cached_property
    def _names(self) -> pd.Index:
        return pd.Index(["entity_id", *self.features])

    def _columns(self, ids: list[int]) -> tuple[dict[str, list], bool]:
        """(values per column, whether every value is a plain scalar or None)."""
        keys = [
            EntityKeyProto(join_keys=[self.join_key], entity_values=[ValueProto(int64_val=i)])
            for i in ids
        ]
        provider, config = self.store.provider, self.store.config
        columns: dict[str, list] = {"entity_id": ids}
        found = [False] * len(ids)
        plain = True
        for view, names in self.views:
            rows = provider.online_read(config, view, keys, names)
            for name in names:
                columns[name] = [None] * len(ids)
            for row, (ts, values) in enumerate(rows):
                if ts is None or not values:
                    continue
                # Redis answers a missing hash with empty values and a zero timestamp.
                found[row] = found[row] or ts.timestamp() > 0
                for name in names:
                    value = values.get(name)
                    if value is not None:
                        kind = value.WhichOneof("val")
                        if kind in _SCALARS:  # as stored (feast_value_type_to_python_type's own)
                            columns[name][row] = getattr(value, kind)
                        else:
                            columns[name][row] = feast_value_type_to_python_type(value)
                            plain = plain and kind is None  # unset: None
        unknown = [i for i, ok in zip(ids, found, strict=True) if not ok]
        if unknown:
            raise UnknownEntityError(self.model_name, unknown)
        for odfv, inputs, outputs in self.on_demand:
            given = {name: columns[name] for name in inputs}
            if odfv.mode == "python":
                result = odfv.feature_transformation.transform(given)
                for name in outputs:
                    columns[name] = list(result[name])
                    plain = plain and all(_is_plain(v) for v in columns[name])
            else:
                result = odfv.feature_transformation.transform(pd.DataFrame(given))
                for name in outputs:
                    columns[name] = result[name].to_numpy()
                    plain = False
        return columns, plain


_SCALARS = frozenset(
    {"int64_val", "int32_val", "double_val", "float_val", "string_val", "bool_val"}
)


def _is_plain(value) -> bool:
    return value is None or type(value) in (int, float, str, bool)
