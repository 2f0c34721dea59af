"""``crm-predict train clv`` / ``train next_best_time``: the demo CRM path and bring-your-own CSVs
train and register; misuse exits 2 with one clear line and no traceback."""

from __future__ import annotations

import pytest
from clv_nbt_frames import planted_events, synthetic_transactions


def test_train_clv_and_next_best_time_on_the_demo_crm(cli, mlflow_client):
    assert cli("demo-data", "--customers", "400", "--seed", "3").exit_code == 0
    clv = cli("train", "clv")
    assert clv.exit_code == 0, clv.output
    assert "clv version 1" in clv.output and "mae_purchases" in clv.output
    nbt = cli("train", "next_best_time")
    assert nbt.exit_code == 0, nbt.output
    assert "next_best_time version 1" in nbt.output and "hit_rate_top1" in nbt.output


def test_train_on_your_own_csvs(cli, tmp_path):
    transactions = tmp_path / "tx.csv"
    synthetic_transactions().to_csv(transactions, index=False)
    clv = cli(
        "train", "clv", "--transactions", str(transactions), "--customer-col", "cust",
        "--date-col", "when", "--amount-col", "value", "--freq", "W",
    )  # fmt: skip
    assert clv.exit_code == 0, clv.output
    events = tmp_path / "events.csv"
    planted_events().to_csv(events, index=False)
    nbt = cli(
        "train", "next_best_time", "--events", str(events), "--contact-col", "who",
        "--time-col", "at", "--responded-col", "answered", "--channel-col", "via",
        "--segment-col", "seg",
    )  # fmt: skip
    assert nbt.exit_code == 0, nbt.output
    assert "version 1" in nbt.output


def test_train_clv_on_cdnow_gives_the_published_mle_by_default(cli, tmp_path, mlflow_client):
    """Fader, Hardie & Lee (2005): the 39-week CDNOW calibration sample (shipped in lifetimes) has
    the MLE r=0.243, alpha=4.414, a=0.793, b=2.426 and Gamma-Gamma p=6.25, q=3.74, v=15.44. The
    default fit is that MLE: a penalizer of 0.001 gave a=0.498, b=1.323 (and mean CLV +17 %)."""
    import re

    from mlflow import MlflowClient
    from test_clv import cdnow_transactions

    tx = cdnow_transactions()
    path = tmp_path / "cdnow.csv"
    tx[tx["date"] <= "1997-09-30"].to_csv(path, index=False)
    result = cli(
        "train", "clv", "--transactions", str(path), "--customer-col", "customer",
        "--date-col", "date", "--amount-col", "amount",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = dict(re.findall(r"\b(r|alpha|a|b|p|q|v)=([0-9.]+)", result.output))
    assert float(printed["r"]) == pytest.approx(0.243, abs=0.001)
    assert float(printed["alpha"]) == pytest.approx(4.414, abs=0.01)
    assert float(printed["a"]) == pytest.approx(0.793, abs=0.002)
    assert float(printed["b"]) == pytest.approx(2.426, abs=0.01)
    assert float(printed["p"]) == pytest.approx(6.25, abs=0.01)
    assert float(printed["q"]) == pytest.approx(3.74, abs=0.01)
    assert float(printed["v"]) == pytest.approx(15.44, abs=0.02)
    assert "unpenalised MLE" in result.output

    uri = f"sqlite:///{(tmp_path / 'cli' / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(client.get_model_version("clv", "1").run_id)
    assert float(run.data.params["penalizer_bgnbd"]) == 0.0
    assert float(run.data.params["fit_a"]) == pytest.approx(0.793, abs=0.002)
    assert run.data.tags["clv_fit_penalized"] == "false"
    assert run.data.metrics["mean_clv_3y"] == pytest.approx(63.4, abs=0.1)
    from crm_predict.registry.card import write_model_card

    card = write_model_card(client, "clv", "1")
    assert "| BG/NBD | r = 0.242" in card and "a = 0.792" in card
    assert "| Gamma-Gamma | p = 6.2" in card and "Fit: unpenalised MLE" in card


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["clv", "--customer-col", "c"], "go with --transactions"),
        (["clv", "--transactions", "nope.csv", "--customer-col", "c"], "--date-col"),
        (["clv", "--transactions", "nope.csv", "--customer-col", "c", "--date-col", "d", "--amount-col", "a"], "does not exist"),
        (["clv", "--csv", "x.csv"], "--csv, --target"),
        (["next_best_time", "--events", "e.csv", "--contact-col", "c"], "--time-col"),
        (["next_best_time", "--segment-col", "s"], "go with --events CSV"),
    ],
)  # fmt: skip
def test_misuse_is_one_clear_error(cli, args, message):
    result = cli("train", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
