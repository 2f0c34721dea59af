"""`make bench` ends with one table: every bench module's result becomes rows beside their floors."""

from benchmarks.figures import Figure, figures_of, table


def test_every_bench_result_becomes_rows_beside_its_same_run_floor():
    serving = {
        "floor_plain": {"p50_ms": 2.0, "p99_ms": 4.0},
        "floor_explain": {"p50_ms": 6.0, "p99_ms": 9.0},
        "http_sequential_plain": {"p50_ms": 3.0, "p99_ms": 5.0},
        "http_paced200_explain": {"p50_ms": 8.0, "p99_ms": 18.0},
        "http_batch100": {"p50_ms": 40.0, "p99_ms": 60.0, "predictions_per_s": 2500.0},
    }
    features = {"sqlite": {"bulk_entities_per_s": 50_000.0, "stock_entities_per_s": 2_500.0,
                           "read1_p50_ms": 0.3, "stock_read1_p50_ms": 0.35,
                           "read100_p50_ms": 9.0, "stock_read100_p50_ms": 18.0}}  # fmt: skip
    store = {"upsert_tags_sqlite": {"first_s": 2.0, "second_s": 4.0, "n_tags": 1e6,
                                    "floor_rows_per_s": 1e6, "history_rows": 5e5}}  # fmt: skip
    batch = {"sqlite": {"seconds": {"load": 1.5}, "wall_seconds": 9.0, "seconds_total": 8.0,
                        "floor": {"seconds": 2.0},
                        "models": {"churn": {"seconds": {"score": 2.0}}}}, "setup": {}}  # fmt: skip
    rows = {
        name: figures_of(name, result)
        for name, result in [("bench_serving", serving), ("bench_features", features),
                             ("bench_store", store), ("bench_batch", batch)]
    }  # fmt: skip
    by_name = {f.name: f for fs in rows.values() for f in fs}
    assert by_name["online plain sequential p99"].ratio() == 5.0 / 4.0
    assert by_name["online batched (100/request)"].floor == 500.0  # 1000 / in-process p50
    assert by_name["Feast materialize sqlite"].ratio() == 2_500.0 / 50_000.0
    assert by_name["tag upserts sqlite (second pass)"].value == 250_000.0
    assert by_name["tag upserts sqlite (second pass)"].ratio() == 4.0
    assert by_name["nightly batch sqlite churn score"].floor is None
    assert by_name["nightly batch sqlite job"].ratio() == 4.0
    assert figures_of("bench_store", RuntimeError("broke")) == []
    given = [Figure("x", 1.0, "s", 0.5, "y")]
    assert figures_of("bench_new", given) == given
    text = table([(m, f) for m, fs in rows.items() for f in fs])
    assert len(text.splitlines()) == 1 + sum(len(fs) for fs in rows.values())
    assert "online plain sequential p99" in text and "—" in text


def test_store_reader_takes_every_upsert_pass_and_the_generator():
    store = {
        "upsert_tags_postgresql": {"n_tags": 1e6, "floor_s": 1.0, "floor_rows_per_s": 1e6,
                                   "first_s": 2.0, "second_s": 1.0, "third_s": 4.0},
        "demo_generator_sqlite": {"wall_s": 10.0, "cpu_s": 9.0, "rows": 2e6},
    }  # fmt: skip
    by_name = {f.name: f for f in figures_of("bench_store", store)}
    assert sorted(by_name) == [
        "demo-data generator sqlite",
        "tag upserts postgresql (first pass)",
        "tag upserts postgresql (second pass)",
        "tag upserts postgresql (third pass)",
    ]
    assert by_name["tag upserts postgresql (third pass)"].ratio() == 4.0
    assert by_name["demo-data generator sqlite"].value == 200_000.0


def test_message_batch_reader_takes_the_first_run_and_the_nightly_walls():
    result = {
        "first": {"messages_per_second": 6000.0, "seconds_wall": 166.0, "peak_rss_mb": 879.0},
        "nightly": {"seconds_wall": 12.1}, "rerun": {"seconds_wall": 10.1}, "messages": 1_000_000,
    }  # fmt: skip
    by_name = {f.name: f for f in figures_of("bench_message_batch", result)}
    assert by_name["message batch first run"].value == 6000.0
    assert by_name["message batch first run"].better == "higher"
    assert by_name["message batch nightly wall"].value == 12.1
    assert set(by_name) == {
        "message batch first run", "message batch first run wall",
        "message batch first run peak RSS", "message batch nightly wall", "message batch rerun wall",
    }  # fmt: skip


def test_model_quality_rows_sit_beside_baseline_with_the_oracle_shown():
    from benchmarks.bench_quality import quality_figures

    auc = quality_figures("deal_health", {"auc": 0.72, "baseline_auc": 0.64, "oracle_auc": 0.79}, "stage_win_rate")  # fmt: skip
    mae = quality_figures("clv", {"mae_purchases": 1.0, "baseline_mae_purchases": 1.5}, "rate")
    assert quality_figures("churn", {"brier": 0.2}, "x") == []  # nothing to compare
    (auc,), (mae,) = auc, mae
    assert (auc.value, auc.floor, auc.ceiling, auc.better) == (0.72, 0.64, 0.79, "higher")
    assert auc.ratio() == 0.64 / 0.72  # below 1: better than the baseline
    assert mae.better == "lower" and mae.ratio() == 1.0 / 1.5 and mae.ceiling is None
    text = table([("bench_quality", auc), ("bench_quality", mae)])
    assert "0.720" in text and "0.640" in text and "baseline: stage_win_rate; oracle 0.790" in text


def test_make_bench_prints_one_table_and_names_failed_or_unread_benchmarks(monkeypatch, capsys):
    import sys
    import types

    from benchmarks.__main__ import main

    def module(name, run):
        mod = types.ModuleType(f"benchmarks.{name}")
        mod.main = run
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
        return name

    def broken():
        raise RuntimeError("no server")

    names = [
        module("bench_ok", lambda: [Figure("ok rate", 2.0, "x/s", 1.0, "floor", "higher")]),
        module("bench_broken", broken),
        module("bench_unread", lambda: {"no": "reader"}),
    ]
    results = main(names)
    out = capsys.readouterr().out
    table_part = out.split("== every figure beside its floor measured in the same run")[1]
    assert "ok rate" in table_part and "0.50" in table_part
    assert "failed benchmarks (no figures): bench_broken" in out
    assert "no figures read from (add a reader in benchmarks/figures.py): bench_unread" in out
    assert isinstance(results["bench_broken"], RuntimeError)
