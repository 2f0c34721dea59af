"""Message API benchmark: ``POST /message_intent`` over loopback HTTP against a real
``bentoml serve`` process, beside the in-process floor (the hub's scoring of one checked text:
TF-IDF, both heads, reasons and keywords; no HTTP).

World: ``crm-predict train message_intent`` (the real CLI step: the demo generator's bilingual
messages, Optuna, MLflow) in a temporary directory; the trained version is made champion. The
service starts without the five tabular models (it reports them, and serves the message model).
Loads: sequential single requests over demo texts (English and Chinese alternating), an open
loop paced at 200 req/s, and batch requests of 100 messages. Bar: single-request p99 ≤ 10 ms.

Run: ``python -m benchmarks.bench_messages [data_dir]`` (or ``make bench``); a ``data_dir`` that
already holds a message_intent version is reused.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_serving import (
    TOKEN,
    _batches,
    _measure,
    _paced,
    _short,
    percentiles,
    run_steps,
    sequential,
    server,
)
from benchmarks.figures import Figure
from crm_predict.core.settings import Settings

ROUTE = "/message_intent"
MODEL = "message_intent"
BAR_P99_MS = 10.0


def champion(settings: Settings) -> str | None:
    """Make the newest version champion; None when none is registered."""
    from mlflow.exceptions import MlflowException

    client = settings.mlflow_client()
    try:
        versions = client.search_model_versions(f"name = '{MODEL}'")
    except MlflowException:
        return None
    if not versions:
        return None
    newest = str(max(int(v.version) for v in versions))
    client.set_registered_model_alias(MODEL, "champion", newest)
    return newest


def demo_texts(settings: Settings, n: int = 400) -> list[str]:
    """Demo messages the model has not seen (another seed), English and Chinese alternating."""
    from datetime import datetime

    from crm_predict.crm_store.demo_messages import generate_messages

    frame = generate_messages(n, settings.seed + 1, datetime(2026, 7, 1), datetime(2026, 8, 1))
    en, zh = (frame.loc[frame["language"] == lang, "text"].tolist() for lang in ("en", "zh"))
    return [t for pair in zip(en, zh, strict=False) for t in pair]


def in_process_floor(settings: Settings, texts: list[str], n: int = 500) -> dict:
    """What the service does per single-message request, without HTTP: check the text, score it
    through the hub (one model call, reasons and keywords)."""
    from crm_predict.serving.hub import MessageJob, ModelHub
    from crm_predict.serving.scoring import check_messages

    hub = ModelHub(settings)
    hub.reload(force=True)
    hub.model(MODEL)
    latencies = []
    for i in range(n + 20):
        started = time.perf_counter()
        job = MessageJob(check_messages([texts[i % len(texts)]], "text"), [None])
        (scored,) = hub.score_message_jobs([job])
        if isinstance(scored, BaseException):
            raise scored
        if i >= 20:  # warm-up
            latencies.append((time.perf_counter() - started) * 1e3)
    hub.close()
    return percentiles(latencies)


def message_ready(state: dict) -> bool:
    return state["text_models"][MODEL]["status"] == "ready"


def main(data_dir: str | None = None) -> list[Figure]:
    """Build the world (or reuse ``data_dir``), measure, print; returns the figures."""
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_messages_") as tmp:
        settings = Settings(
            data_dir=Path(data_dir or Path(tmp) / "data"), optuna_trials=4, api_token=TOKEN,
            max_batch_size=1000,
        )  # fmt: skip
        settings.ensure_dirs()
        if champion(settings) is None:
            print(f"building the world ({MODEL} on the demo messages):", flush=True)
            run_steps(settings, ["train", MODEL])
        version = champion(settings)
        texts = demo_texts(settings)
        mean_chars = sum(map(len, texts)) / len(texts)
        print(f"  {MODEL} v{version}; {len(texts)} texts, {mean_chars:.0f} characters on average")
        results["machine"] = {"load_average_1m": os.getloadavg()[0], "cpus": os.cpu_count()}
        results["floor"] = in_process_floor(settings, texts)
        print(f"  floor: {_short(results['floor'])}", flush=True)

        def single(i: int) -> tuple[str, dict]:
            return ROUTE, {"text": texts[i % len(texts)], "id": i}

        def batch(i: int) -> tuple[str, dict]:
            chunk = [{"text": texts[(i * 100 + j) % len(texts)]} for j in range(100)]
            return f"{ROUTE}/batch", {"messages": chunk}

        with server(settings, Path(tmp) / "server.log", ready=message_ready) as base:
            _measure(results, "http_sequential", sequential, base, [], False, 500, single)
            _measure(results, "http_paced200", _paced, base, [], False, 200, 4, single)
            _measure(results, "http_batch100", _batches, base, [], 100, 2, 20, batch)
        results["machine"]["load_average_1m_after"] = os.getloadavg()[0]
    figures = _figures(results)
    for f in figures:
        print(f"  {f.name}: {f.value:.2f} {f.unit} (floor {f.floor if f.floor is None else round(f.floor, 2)})")  # fmt: skip
    p99 = results.get("http_sequential", {}).get("p99_ms", float("nan"))
    print(f"target single-request p99 ≤ {BAR_P99_MS:g} ms: {'met' if p99 <= BAR_P99_MS else 'NOT met'} ({p99:.2f} ms)")  # fmt: skip
    return figures


def _figures(results: dict[str, dict]) -> list[Figure]:
    floor = results.get("floor", {})
    rows = []
    for case, label in (("http_sequential", "sequential"), ("http_paced200", "paced 200/s")):
        for p in ("p50", "p99"):
            value = results.get(case, {}).get(f"{p}_ms")
            if value is not None:
                rows.append(Figure(
                    f"/message_intent single {label} {p}", value, "ms", floor.get(f"{p}_ms"),
                    f"in-process check + score {p}",
                ))  # fmt: skip
    rate = results.get("http_batch100", {}).get("predictions_per_s")
    if rate is not None and floor.get("p50_ms"):
        rows.append(Figure(
            "/message_intent batched (100/request)", rate, "msg/s", 1000 / floor["p50_ms"],
            "in-process single-message msg/s", "higher",
        ))  # fmt: skip
    return rows


if __name__ == "__main__":
    main(*sys.argv[1:2])
