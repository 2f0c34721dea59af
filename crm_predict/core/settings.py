"""One typed settings object, read from the environment (prefix ``CRM_PREDICT_``) and passed down."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from crm_predict.core.errors import UserError

# Tokens that protect nothing: unset, blank, or the placeholder this project once documented.
UNSET_TOKENS = frozenset({"", "change-me"})


class Settings(BaseSettings):
    """Everything a job needs to know about where things live; built once per entry point."""

    model_config = SettingsConfigDict(env_prefix="CRM_PREDICT_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        Path("data"), description="Root for the SQLite files, Parquet and Feast repo."
    )
    database_url: str | None = Field(
        None, description="CRM store URL; default SQLite under data_dir."
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="Default sqlite:///<data_dir>/mlflow.db."
    )
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    seed: int = 42

    # Training budgets: small in tests, larger in the quickstart.
    optuna_trials: int = 10
    holdout_fraction: float = 0.2
    min_class_count: int = 40
    cv_below_rows: int = Field(
        20_000,
        ge=0,
        description="Below this many training + validation rows, candidates are chosen by "
        "time-ordered cross-validation instead of one validation split; 0 = always one split.",
    )
    auto_promote: bool = Field(
        False, description="retrain promotes a challenger that passes every gate to champion."
    )
    # p99 ≤ 10 ms at 200 req/s on 2 cores: beside the service's own ~2.4 ms CPU a request, a
    # model over ~2.5 ms keeps a core busy and requests queue.
    predict_latency_budget_ms: float = Field(
        2.5, description="Single-row score p99 (CPU ms) a model must meet: search + gate; 0 = off."
    )
    explain_latency_budget_ms: float = Field(
        10.0, description="Single-row score-with-reasons p99 (CPU ms) for the gate; 0 = off."
    )

    # Serving.
    api_token: str = Field(
        "", description="Bearer token for write-back and admin endpoints; required to serve."
    )
    allow_no_api_token: bool = Field(
        False,
        description="Local demos only: serve without a configured token, with a one-off random "
        "token that `crm-predict serve` prints.",
    )
    protect_reads: bool = False
    max_batch_size: int = 1000
    reload_interval_seconds: float = Field(
        0, description="Poll the registry for a new champion every N s (0: only POST /admin/reload)"
    )
    # BentoML's per-request extras: off by default (together ~0.8 ms CPU of a ~2 ms lead-score
    # request), each can be turned back on.
    access_log: bool = Field(False, description="BentoML's per-request access log.")
    request_metrics: bool = Field(False, description="BentoML's Prometheus request metrics.")
    request_tracing: bool = Field(False, description="OpenTelemetry spans for the API routes.")
    serving_workers: int = Field(1, ge=1, description="BentoML worker processes of `serve`.")

    # Columns that must never reach a model (fairness and privacy guard).
    excluded_features: list[str] = ["gender", "age_band"]
    protected_attribute: str = "gender"

    # Batch scoring.
    batch_chunk_size: int = 50_000
    rules_file: Path | None = Field(
        None,
        description="Business rules YAML (crm_predict/core/rules.default.yaml documents every key); "
        "default <data_dir>/rules.yaml when it exists, else the built-in defaults.",
    )

    # KPI report (crm_store.kpis). The store has no cost table: a CSV (month,channel,marketing_cost,
    # sales_cost) or the flat monthly amounts below (demo defaults; set your own).
    kpi_cost_csv: Path | None = Field(None, description="Cost CSV; overrides the flat amounts.")
    kpi_marketing_cost_per_month: float = Field(20_000.0, description="Unattributed marketing.")
    kpi_sales_cost_per_month: float = 30_000.0
    kpi_channel_cost_per_month: dict[str, float] = Field(
        default_factory=lambda: {
            "web_form": 3_000.0, "referral": 1_000.0, "event": 4_000.0, "paid_search": 6_000.0,
            "cold_outbound": 4_000.0, "partner": 2_000.0,
        },
        description="Marketing cost per lead source for channel ROI (demo sources; JSON in env).",
    )  # fmt: skip
    kpi_customer_lifetime_years: float = 3.0
    kpi_window_months: int = 12

    @property
    def crm_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'crm.db').resolve()}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def feature_dir(self) -> Path:
        """Parquet snapshots exported from the CRM (Feast offline sources)."""
        return self.data_dir / "features"

    @property
    def feast_repo_dir(self) -> Path:
        return self.data_dir / "feast_repo"

    @property
    def demo_truth_dir(self) -> Path:
        """Where the demo generator saves its latent probabilities (oracle for training reports)."""
        return self.data_dir / "demo_truth"

    @property
    def rules_path(self) -> Path | None:
        """The rules file in effect: ``rules_file``, else ``<data_dir>/rules.yaml`` if it exists,
        else None (the built-in defaults)."""
        if self.rules_file is not None:
            return self.rules_file
        default = self.data_dir / "rules.yaml"
        return default if default.is_file() else None

    def load_rules(self):
        """The business rules (``crm_predict.core.rules.Rules``) of ``rules_path``, read now."""
        from crm_predict.core.rules import load_rules

        return load_rules(self.rules_path)

    def mlflow_client(self):
        """An ``mlflow.MlflowClient`` on ``tracking_uri``, for both the runs and the registry."""
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def serving_token(self) -> str:
        """The token the service checks; refuses an unset or placeholder one unless
        ``allow_no_api_token``, which gets a random token nobody else knows."""
        if self.api_token.strip() and self.api_token not in UNSET_TOKENS:
            return self.api_token
        if not self.allow_no_api_token:
            raise UserError(
                "no API token: set CRM_PREDICT_API_TOKEN to a secret (e.g. the output of "
                "`openssl rand -hex 32`) before serving; for a local demo only, "
                "CRM_PREDICT_ALLOW_NO_API_TOKEN=true serves with a one-off random token"
            )
        return secrets.token_urlsafe(32)

    def ensure_dirs(self) -> None:
        for path in (self.data_dir, self.feature_dir, self.feast_repo_dir, self.demo_truth_dir):
            path.mkdir(parents=True, exist_ok=True)
