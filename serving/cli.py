"""Commands of the serving package (registered by crm_predict.cli)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from crm_predict.core.errors import UserError
from crm_predict.core.settings import Settings

app = typer.Typer(no_args_is_help=True)

SERVICE_IMPORT = "crm_predict.serving.service:CrmPredict"
SERVICE_NAME = "crm_predict"  # serving.service.SERVICE_NAME, without importing BentoML here
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``CRM_PREDICT_*`` variables, so the server process builds the same object."""
    env = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        env[f"CRM_PREDICT_{name.upper()}"] = text
    return env


def serve_command(
    settings: Settings, host: str = "127.0.0.1", port: int = 3000
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of a ``bentoml serve`` process for the CRM service; refuses
    (UserError) to serve without an API token unless the settings allow it for a demo."""
    token = settings.serving_token()
    argv = [
        sys.executable, "-m", "bentoml", "serve", SERVICE_IMPORT,
        "--host", host, "--port", str(port), "--working-dir", str(PROJECT_ROOT),
    ]  # fmt: skip
    env = {
        **os.environ, **settings_env(settings),
        "CRM_PREDICT_API_TOKEN": token, "BENTOML_DO_NOT_TRACK": "True",
    }  # fmt: skip
    ours = service_overrides(settings)
    if ours:
        env[OVERRIDES_VAR] = json.dumps(_merged(env.get(OVERRIDES_VAR), ours))
    return argv, env


OVERRIDES_VAR = "BENTOML_CONFIG_OVERRIDES"  # BentoML's JSON config overrides, applied last


def service_overrides(settings: Settings) -> dict[tuple[str, ...], object]:
    """This service's BentoML config (key path under ``services.crm_predict`` → value) where the
    settings differ from BentoML's defaults: per-request work a busy API may drop (access log,
    Prometheus metrics, OpenTelemetry spans) and the number of worker processes."""
    ours: dict[tuple[str, ...], object] = {}
    if not settings.access_log:
        ours["logging", "access", "enabled"] = False
    if not settings.request_metrics:
        ours["metrics", "enabled"] = False
    if not settings.request_tracing:
        ours["tracing", "excluded_urls"] = [".*"]  # OpenTelemetry's middleware passes through
    if settings.serving_workers != 1:
        ours[("workers",)] = settings.serving_workers
    return ours


def _merged(overrides: str | None, ours: dict[tuple[str, ...], object]) -> dict:
    """The caller's BentoML JSON overrides (kept) with this service's own settings set."""
    try:
        config = json.loads(overrides) if overrides else {}
    except json.JSONDecodeError as exc:
        raise UserError(f"{OVERRIDES_VAR} is not valid JSON: {exc}") from None
    for path, value in ours.items():
        node = config.setdefault("services", {}).setdefault(SERVICE_NAME, {})
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return config


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Interface to bind (0.0.0.0 for all)."),
    port: int = typer.Option(3000, help="HTTP port."),
) -> None:
    """Start the online API (BentoML): scores, reasons, write-back; OpenAPI docs at /."""
    settings: Settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings()
    argv, env = serve_command(settings, host, port)
    if env["CRM_PREDICT_API_TOKEN"] != settings.api_token:
        typer.echo(f"demo mode, no API token configured: this run's token is {env['CRM_PREDICT_API_TOKEN']}")  # fmt: skip
    typer.echo(f"serving on http://{host}:{port} (docs at /, readiness at /readyz)")
    sys.stdout.flush()
    # The server takes this process's place: a signal to the pid the caller started (a service
    # manager's SIGTERM, Ctrl-C) reaches BentoML's own shutdown, which stops its workers; a child
    # process would be orphaned holding the port.
    os.execve(argv[0], argv, env)
