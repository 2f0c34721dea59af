"""`crm-predict report` writes one HTML file with every KPI section, its charts and model quality."""

from __future__ import annotations

import re

from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from mlflow import MlflowClient
from tiny_crm import build_tiny_crm
from tiny_registry import register_version
from typer.testing import CliRunner

from crm_predict.cli import app
from crm_predict.core.settings import Settings

SECTIONS = ("funnel", "cycle", "acquisition", "channels", "owners", "forecast", "models")
CHARTS = ("funnel", "sales_cycle", "cac", "channel_roi", "owners", "forecast")


def _tiny_store(settings: Settings) -> None:
    engine = make_engine(settings.crm_url)
    upgrade(engine)
    with session_factory(engine)() as session:
        build_tiny_crm(session)
    engine.dispose()


def _run_report(settings: Settings, out) -> str:
    result = CliRunner().invoke(
        app, ["--data-dir", str(settings.data_dir), "report", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return (out / "report.html").read_text()


def test_report_has_every_section_and_chart_without_models(settings, tmp_path):
    _tiny_store(settings)
    html = _run_report(settings, tmp_path / "out")
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    for chart in CHARTS:
        png = tmp_path / "out" / "charts" / f"{chart}.png"
        assert png.read_bytes().startswith(b"\x89PNG")
    assert html.count("data:image/png;base64,") == len(CHARTS)
    assert "No models registered yet" in html
    # Numbers from the tiny store: 5 leads, 3 won deals, forecast 0.75 × 2000 + 0.75 × 1000.
    assert re.search(r"<td>leads</td><td>5</td>", html)
    assert "2,250" in html
    assert "Data as of 2026-06-01" in html


def test_report_compares_champion_and_challenger(settings, tmp_path):
    _tiny_store(settings)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    v1 = register_version(client, "deal_health", {"auc": 0.612, "brier": 0.2, "ece": 0.031})
    v2 = register_version(client, "deal_health", {"auc": 0.734, "lift_at_10": 2.5}, tmp_path)
    client.set_registered_model_alias("deal_health", "champion", v1)
    client.set_registered_model_alias("deal_health", "challenger", v2)

    html = _run_report(settings, tmp_path / "out")
    assert "No models registered yet" not in html
    assert "<h3>deal_health</h3>" in html
    assert "0.612" in html and "0.734" in html and "<th>lift_at_10</th>" in html
    assert "deal_health v2 (challenger): calibration" in html
    assert html.count("data:image/png;base64,") == len(CHARTS) + 2
    models_dir = tmp_path / "out" / "charts" / "models" / "deal_health" / "challenger"
    assert sorted(p.name for p in models_dir.rglob("*.png")) == ["calibration.png"] * 2
