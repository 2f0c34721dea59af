"""CLV: the fit reproduces the published CDNOW parameters, the job logs and registers a pyfunc
that honours the contract, and bad input fails with a clear message and nothing logged."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from clv_nbt_frames import synthetic_transactions
from crm_predict.training.clv import (
    FEATURES,
    ClvConfig,
    ClvParams,
    customer_summary,
    evaluate_holdout,
    fit_clv,
    predict_clv,
    run_training,
    train_clv,
    transactions_frame,
)

from crm_predict.core.errors import UserError
from crm_predict.core.rules import RFM_SEGMENTS, rfm_segment
from crm_predict.core.settings import Settings


def cdnow_transactions() -> pd.DataFrame:
    """The CDNOW sample transaction log shipped inside lifetimes (2,357 customers)."""
    import lifetimes

    path = Path(lifetimes.__file__).parent / "datasets" / "CDNOW_sample.txt"
    raw = pd.read_csv(
        path, sep=r"\s+", header=None, names=["customer", "id", "date", "items", "amount"],
        dtype={"date": str},
    )  # fmt: skip
    return transactions_frame(raw, "customer", "date", "amount")


def test_cdnow_fit_matches_published_bgnbd_parameters():
    """Fader, Hardie & Lee (2005): r=0.243, alpha=4.414, a=0.793, b=2.426 on the 39-week
    calibration period of the CDNOW sample."""
    config = ClvConfig(
        penalizer=0.0, calibration_end=datetime(1997, 9, 30), observation_end=datetime(1998, 6, 30)
    )
    metrics, holdout, params = evaluate_holdout(cdnow_transactions(), config)
    assert params.r == pytest.approx(0.243, abs=0.002)
    assert params.alpha == pytest.approx(4.414, abs=0.01)
    assert params.a == pytest.approx(0.793, abs=0.002)
    assert params.b == pytest.approx(2.426, abs=0.01)
    assert holdout["duration_holdout"].iloc[0] == pytest.approx(39.0)
    # The model beats "keep buying at your calibration rate" on holdout purchases.
    assert metrics["mae_purchases"] < metrics["baseline_mae_purchases"]


def test_train_logs_metrics_and_registers_a_pyfunc_that_follows_the_contract(mlflow_client):
    import mlflow

    tx = transactions_frame(synthetic_transactions(), "cust", "when", "value")
    result = train_clv(mlflow_client, tx)

    run = mlflow_client.get_run(result.run_id)
    for metric in ("mae_purchases", "baseline_mae_purchases", "n_customers"):
        assert np.isfinite(run.data.metrics[metric])
    assert run.data.tags["entity"] == "customer"
    assert run.data.tags["feature_service"] == "clv_v1"
    artifacts = {a.path for a in mlflow_client.list_artifacts(result.run_id, "plots")}
    assert "plots/calibration_vs_holdout_purchases.png" in artifacts
    holdout = pd.read_parquet(
        mlflow_client.download_artifacts(result.run_id, "holdout/holdout.parquet")
    )
    assert {"entity_id", "label", *FEATURES} <= set(holdout.columns)

    version = mlflow_client.get_model_version("clv", result.model_version)
    assert version.run_id == result.run_id
    model = mlflow.pyfunc.load_model(f"models:/clv/{result.model_version}")
    customers = pd.DataFrame(
        {"frequency": [0.0, 6.0, 6.0], "recency": [0.0, 60.0, 10.0], "T": [70.0, 61.0, 70.0],
         "monetary_value": [0.0, 120.0, 120.0]}
    )  # fmt: skip
    out = model.predict(customers)
    assert list(out.columns) == ["clv_3y", "p_alive", "expected_purchases_90d"]
    # A frequent buyer seen last week is worth more, and more likely alive, than one gone 60 weeks.
    assert out.loc[1, "clv_3y"] > out.loc[2, "clv_3y"] > 0
    assert out.loc[1, "p_alive"] > out.loc[2, "p_alive"]
    assert out.loc[0, "p_alive"] == pytest.approx(1.0)  # BG/NBD: no repeat purchase, no dropout
    assert out["expected_purchases_90d"].between(0, 13).all()

    assert set(result.customers["rfm_segment"]) <= set(RFM_SEGMENTS.values())
    assert set(result.customers["value_tier"]) <= {"diamond", "gold", "normal"}


def test_clv_is_discounted_over_the_rules_horizon():
    params = ClvParams(r=0.5, alpha=5.0, a=0.5, b=5.0, p=6.0, q=4.0, v=15.0)
    customer = pd.DataFrame(
        {"frequency": [4.0], "recency": [30.0], "T": [32.0], "monetary_value": [50.0]}
    )
    undiscounted = ClvParams(**{**params.__dict__, "annual_discount_rate": 0.0})
    one_year = ClvParams(**{**params.__dict__, "horizon_weeks": 52})
    clv = predict_clv(params, customer)["clv_3y"].iloc[0]
    assert clv < predict_clv(undiscounted, customer)["clv_3y"].iloc[0]
    assert clv > predict_clv(one_year, customer)["clv_3y"].iloc[0] > 0


def test_non_convergence_suggests_a_higher_penalizer():
    # Every customer bought 5 more times, the last purchase today: the likelihood has no optimum.
    summary = pd.DataFrame(
        {"frequency": 5.0, "recency": 30.0, "T": 30.0, "monetary_value": 20.0}, index=range(40)
    )
    with pytest.raises(UserError, match="did not converge.*higher penalizer"):
        fit_clv(summary, penalizer=0.0)


def test_a_penalizer_is_used_only_when_the_mle_does_not_converge():
    from crm_predict.training.clv import fit_clv_auto

    tx = transactions_frame(synthetic_transactions(), "cust", "when", "value")
    mle = fit_clv_auto(customer_summary(tx, tx["date"].max()))
    assert (mle.penalizer_bgnbd, mle.penalizer_gamma_gamma) == (0.0, 0.0)
    assert not mle.penalized and "unpenalised MLE" in mle.describe()
    # Every customer bought 5 more times for the same amount: the spend MLE does not exist.
    degenerate = pd.DataFrame(
        {"frequency": 5.0, "recency": 30.0, "T": 30.0, "monetary_value": 20.0}, index=range(40)
    )
    fallback = fit_clv_auto(degenerate)
    assert fallback.penalizer_gamma_gamma > 0 and fallback.penalized
    assert "Gamma-Gamma spend MLE did not converge" in fallback.describe()
    assert np.isfinite([fallback.params.p, fallback.params.q, fallback.params.v]).all()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("cust,when,value\n1,2025-01-01,10\n", "no column.*'amount'"),
        ("customer,date,amount\n1,2025-01-01,10\n2,yesterday,5\n3,2025-02-01,1\n", "'date'.*not a valid date"),
        ("customer,date,amount\n1,2025-01-01,10\n2,2025-01-02,ten\n3,2025-02-01,1\n", "'amount'.*not a valid number"),
        ("customer,date,amount\n1,2025-01-01,10\n2,2025-01-02,-4\n3,2025-02-01,1\n", "negative"),
        ("customer,date,amount\n1,2025-01-01,10\n", "at least 2 customers"),
        ("", "cannot read"),
    ],
)  # fmt: skip
def test_bad_transaction_csv_is_a_user_error_and_logs_nothing(
    tmp_path, mlflow_client, content, message
):
    path = tmp_path / "tx.csv"
    if content is not None:
        path.write_text(content)
    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(UserError, match=message):
        run_training(settings, mlflow_client, path, "customer", "date", "amount")
    assert mlflow_client.search_registered_models() == []


def test_failed_training_logs_no_run(mlflow_client):
    tx = transactions_frame(
        pd.DataFrame({"c": [1, 2, 3], "d": ["2025-01-01", "2025-01-02", "2025-03-01"], "a": [1, 2, 3]}),
        "c", "d", "a",
    )  # fmt: skip
    with pytest.raises(UserError, match="bought more than once"):
        train_clv(mlflow_client, tx)
    assert mlflow_client.search_registered_models() == []
    experiment = mlflow_client.get_experiment_by_name("clv")
    assert experiment is None or not mlflow_client.search_runs([experiment.experiment_id])


def test_spend_fit_does_not_depend_on_the_currency_unit():
    """lifetimes penalises raw parameters; v is in currency units, so without rescaling the
    penalizer would crush v for amounts in cents but not in dollars."""
    tx = transactions_frame(synthetic_transactions(), "cust", "when", "value")
    in_cents = tx.assign(amount=tx["amount"] * 100)
    end = tx["date"].max()
    dollars = fit_clv(customer_summary(tx, end), penalizer=0.01)
    cents = fit_clv(customer_summary(in_cents, end), penalizer=0.01)
    assert cents.p == pytest.approx(dollars.p, rel=1e-3)
    assert cents.q == pytest.approx(dollars.q, rel=1e-3)
    assert cents.v == pytest.approx(100 * dollars.v, rel=1e-3)


def _histories(n: int = 500, seed: int = 0) -> tuple[pd.Series, ...]:
    """(frequency, recency, T, monetary) in whole weeks as the feature pipeline gives them, many
    customers sharing a (frequency, T), plus a few whose hypergeometric term overflows (lifetimes'
    alternative form) or gives NaN."""
    rng = np.random.default_rng(seed)
    f = rng.integers(0, 20, n).astype(float)
    r = rng.integers(0, 50, n) * (f > 0).astype(float)
    t = r + rng.integers(0, 30, n)
    f[:3], r[:3], t[:3] = [100.0, 120.0, 400.0], [2.0, 5.0, 10.0], [3.0, 6.0, 12.0]
    m = rng.uniform(5, 500, n) * (f > 0)
    return pd.Series(f), pd.Series(r), pd.Series(t), pd.Series(m)


CLV_PARAMS = ClvParams(r=0.5, alpha=5.0, a=0.5, b=5.0, p=6.0, q=4.0, v=15.0)


def test_discounted_clv_equals_lifetimes_customer_lifetime_value():
    from crm_predict.training.clv import WEEKS_PER_MONTH, _fitters, discounted_clv

    params = CLV_PARAMS
    f, r, t, m = _histories()
    bgf, ggf = _fitters(params)
    months = round(params.horizon_weeks / WEEKS_PER_MONTH)
    rate = (1 + params.annual_discount_rate) ** (1 / 12) - 1
    want = ggf.customer_lifetime_value(bgf, f, r, t, m, time=months, discount_rate=rate, freq="W")
    got = discounted_clv(params, f, r, t, m, months, rate)
    np.testing.assert_allclose(got, want.to_numpy(), rtol=1e-9)
    assert np.isnan(got).sum() == np.isnan(want.to_numpy()).sum() > 0  # lifetimes' own NaNs kept


@pytest.mark.parametrize("weeks", [0.0, 90 / 7, 52.0, 156.0])
def test_expected_purchases_and_p_alive_equal_lifetimes(weeks):
    from crm_predict.training.clv import _fitters, expected_purchases, probability_alive

    f, r, t, _ = _histories(seed=1)
    bgf, _ = _fitters(CLV_PARAMS)
    want = bgf.conditional_expected_number_of_purchases_up_to_time(weeks, f, r, t).to_numpy()
    np.testing.assert_allclose(expected_purchases(CLV_PARAMS, weeks, f, r, t), want, rtol=1e-9)
    alive = bgf.conditional_probability_alive(f, r, t)
    np.testing.assert_allclose(probability_alive(CLV_PARAMS, f, r, t), alive, rtol=1e-9)


def test_predict_clv_outputs_follow_row_order_and_index():
    """The per-pair evaluation maps back to each customer in order, whatever the index."""
    f, r, t, m = _histories(n=50, seed=2)
    customers = pd.DataFrame({"frequency": f, "recency": r, "T": t, "monetary_value": m}).set_index(
        pd.Index(np.arange(50)[::-1] * 7)
    )
    out = predict_clv(CLV_PARAMS, customers)
    assert out.index.equals(customers.index)
    one_by_one = pd.concat([predict_clv(CLV_PARAMS, customers.iloc[[i]]) for i in range(50)])
    pd.testing.assert_frame_equal(out, one_by_one, rtol=1e-12)


def test_rfm_segment_names_each_high_low_combination_and_missing_is_low():
    # Recency High = at or below its median (recent); frequency and monetary at or above theirs.
    recency = [1, 1, 1, 1, 9, 9, 9, 9, np.nan]
    frequency = [9, 9, 1, 1, 9, 9, 1, 1, np.nan]
    monetary = [9, 1, 9, 1, 9, 1, 9, 1, np.nan]
    segments = rfm_segment(recency, frequency, monetary, medians=(5, 5, 5))
    assert segments.tolist() == [*RFM_SEGMENTS.values(), "lost"]
