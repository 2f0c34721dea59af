"""The Feast feature store, configured from the settings (no feature_store.yaml to keep in sync)."""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from crm_predict.features.definitions import all_objects
from feast import FeatureStore, RepoConfig
from feast.infra.offline_stores.dask import DaskOfflineStoreConfig
from feast.repo_config import RegistryConfig

from crm_predict.core.errors import UserError
from crm_predict.core.settings import Settings

PROJECT = "crm_predict"


def redis_connection_string(url: str) -> str:
    """``redis://[:password@]host:port/db`` as Feast's ``host:port,db=N[,password=…]``."""
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise UserError(f"redis_url must look like redis://host:port/db, got {url!r}")
    parts = [f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379}"]
    db = parsed.path.strip("/")
    if db:
        parts.append(f"db={int(db)}")
    if parsed.password:
        parts.append(f"password={unquote(parsed.password)}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def repo_config(settings: Settings, project: str = PROJECT, bulk: bool = True) -> RepoConfig:
    """Registry in ``feast_repo_dir``, Parquet (file/Dask) offline store, online store SQLite by
    default or Redis at ``settings.redis_url`` when ``online_store == "redis"``: the bulk-capable
    subclasses from ``crm_predict.features.online_store``, or Feast's stock classes with ``bulk=False``."""
    repo = settings.feast_repo_dir.resolve()
    if settings.online_store == "redis":
        online = {
            "type": "crm_predict.features.online_store.BulkRedisOnlineStore" if bulk else "redis",
            "connection_string": redis_connection_string(settings.redis_url),
        }
    else:
        online = {
            "type": "crm_predict.features.online_store.BulkSqliteOnlineStore" if bulk else "sqlite",
            "path": str(repo / ("online_store.db" if bulk else "online_store_stock.db")),
        }
    return RepoConfig(
        project=project,
        provider="local",
        repo_path=repo,
        registry=RegistryConfig(path=str(repo / "crm_predict.registry.db"), cache_ttl_seconds=60),
        offline_store=DaskOfflineStoreConfig(type="file"),
        online_store=online,
        entity_key_serialization_version=3,
    )


def feature_store(settings: Settings, project: str = PROJECT, bulk: bool = True) -> FeatureStore:
    """A FeatureStore over the settings' repo directory (created if missing)."""
    settings.feast_repo_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=repo_config(settings, project, bulk))


def apply(settings: Settings, project: str = PROJECT) -> FeatureStore:
    """Register entities, views, the on-demand view and the FeatureServices; create online tables."""
    store = feature_store(settings, project)
    store.apply(all_objects(settings))
    return store
