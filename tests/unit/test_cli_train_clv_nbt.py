"""``crm-predict train clv`` / ``train next_best_time``: the demo CRM path and bring-your-own CSVs
train and register; misuse exits 2 with one clear line and no traceback."""

from __future__ import annotations

import pytest
from clv_nbt_frames import planted_events, synthetic_transactions
from typer.testing import CliRunner


@pytest.fixture
def cli(tmp_path):
    from crm_predict.cli import app

    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, ["--data-dir", str(tmp_path / "cli"), *args])

    return run


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
