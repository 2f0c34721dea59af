"""Online API benchmark: lead score by id over loopback HTTP against a real ``bentoml serve``
process, beside the in-process floor (Feast online read + predict, no HTTP).

World: a small demo CRM → features export → ``feast apply`` → materialize → ``train lead_scoring``
(the real CLI steps) in a temporary directory; the trained version is made champion. Loads:
sequential, closed-loop concurrent (8 and 32 in flight), open-loop paced at 200 req/s, and batch
requests (100 ids each), each with and without explain. Every loop is bounded; the server's process
group is killed at the end. The machine's load average is recorded beside the figures: on a
shared machine, latency figures move with it (the server CPU per request much less).

Run: ``python -m benchmarks.bench_serving [customers [data_dir]]`` (or ``make bench``); a
``data_dir`` that already holds such a world is reused (else it is built there).
Targets: p99 ≤ 10 ms at 200 req/s without explain, ≤ 20 ms with explain, ≥ 1,000 predictions/s
with batching. The server runs with the settings of the environment: by default without BentoML's
per-request access log, metrics and tracing; ``CRM_PREDICT_ACCESS_LOG=true
CRM_PREDICT_REQUEST_METRICS=true CRM_PREDICT_REQUEST_TRACING=true`` measures them on,
``CRM_PREDICT_SERVING_WORKERS=2`` two worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from crm_predict.core.settings import Settings

ROUTE = "/lead_score"
TOKEN = "bench-token"
SERVER_PIDS: dict[str, int] = {}  # base URL → pid of the running ``bentoml serve``


def percentiles(latencies_ms: list[float]) -> dict[str, float]:
    a = np.asarray(latencies_ms, dtype=float)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "n": len(a)}  # fmt: skip


def run_steps(settings: Settings, *steps: list[str]) -> None:
    """Run ``crm-predict`` commands on ``settings.data_dir`` in turn, printing each one's time."""
    import typer

    from crm_predict.cli import app

    command = typer.main.get_command(app)
    for args in steps:
        started = time.perf_counter()
        command.main(["--data-dir", str(settings.data_dir), *args], standalone_mode=False)
        print(f"  {' '.join(args)}: {time.perf_counter() - started:.1f} s", flush=True)


def build_world(settings: Settings, customers: int) -> None:
    """Demo CRM, features in the online store and a lead-scoring champion, through the CLI."""
    run_steps(
        settings,
        ["demo-data", "--customers", str(customers), "--as-of", "2026-06-30", "--replace"],
        ["features", "export"], ["features", "apply"], ["features", "materialize"],
        ["train", "lead_scoring"],
    )  # fmt: skip
    client = settings.mlflow_client()
    version = client.get_model_version_by_alias("lead_scoring", "challenger").version
    client.set_registered_model_alias("lead_scoring", "champion", version)


def lead_ids(settings: Settings, limit: int = 500) -> list[int]:
    from crm_predict.features.definitions import VIEWS, source_path

    view = VIEWS["lead_profile"]
    frame = pd.read_parquet(source_path(settings, view.name), columns=[view.join_key])
    return sorted(int(i) for i in frame[view.join_key].unique())[:limit]


def in_process_floor(settings: Settings, ids: list[int], n: int = 300) -> dict[str, dict]:
    """What the service does per single-lead request, without HTTP: the hub's online read
    (``ServiceReader``: stored views + the on-demand rule score) and scoring (+ reasons), one lead
    at a time. Stock Feast ``get_online_features`` of the same FeatureService is timed beside."""
    from crm_predict.features.online import online_features
    from crm_predict.serving.hub import Job, ModelHub

    hub = ModelHub(settings)
    hub.reload(force=True)
    hub.model("lead_scoring")
    out = {}
    read_ms = []
    for i in range(n):
        started = time.perf_counter()
        hub.online.read("lead_scoring", [ids[i % len(ids)]])
        read_ms.append((time.perf_counter() - started) * 1e3)
    for explain in (False, True):
        total_ms = []
        cpu = time.process_time()
        for i in range(n):
            started = time.perf_counter()
            (scored,) = hub.score_jobs("lead_scoring", [Job(ids=[ids[i % len(ids)]], explain=explain)])  # fmt: skip
            total_ms.append((time.perf_counter() - started) * 1e3)
            if isinstance(scored, BaseException):
                raise scored
        key = "explain" if explain else "plain"
        out[f"floor_{key}"] = percentiles(total_ms) | {
            "feast_read_p50_ms": float(np.median(read_ms)),
            "cpu_ms_per_prediction": (time.process_time() - cpu) / n * 1e3,
        }  # fmt: skip
        print(f"  floor_{key}: {_short(out[f'floor_{key}'])}", flush=True)
    store, stock_ms = hub.online._store, []
    for i in range(100):
        started = time.perf_counter()
        online_features(store, "lead_scoring", [ids[i % len(ids)]])
        stock_ms.append((time.perf_counter() - started) * 1e3)
    out["stock_feast_read"] = percentiles(stock_ms)
    print(f"  stock Feast get_online_features: {_short(out['stock_feast_read'])}", flush=True)
    hub.close()
    return out


def _short(r: dict) -> dict:
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lead_scoring_ready(state: dict) -> bool:
    return state["models"]["lead_scoring"]["status"] == "ready"


@contextlib.contextmanager
def server(settings: Settings, log_path: Path, ready: Callable[[dict], bool] = lead_scoring_ready):
    """A ``bentoml serve`` process on a free port, once ``ready(/models answer)`` holds."""
    from crm_predict.serving.cli import serve_command

    port = free_port()
    argv, env = serve_command(settings, "127.0.0.1", port)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if ready(httpx.get(f"{base}/models", timeout=2).json()):
                    break
            time.sleep(0.5)
        else:
            raise RuntimeError("server not ready in 300 s")
        SERVER_PIDS[base] = proc.pid  # CPU time is summed over its process tree
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def server_cpu_seconds(pid: int | None) -> float:
    """CPU seconds used so far by the server process and its children."""
    import psutil

    if pid is None:
        return float("nan")
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        return sum(sum(p.cpu_times()[:2]) for p in procs)
    except psutil.Error:
        return float("nan")


class RawHttp:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams (JSON POSTs, Content-Length or
    chunked answers): the load client shares the 2 cores with the server, and httpx costs several
    times the server's own CPU per request. ``cpu`` (this process's CPU seconds) is reported
    beside every load so the figures say what the client took."""

    def __init__(self, base: str, max_connections: int = 64):
        host, port = base.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(max_connections)

    async def post(self, path: str, payload: dict) -> tuple[int, bytes]:
        body = json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        async with self.slots:
            if self.idle:
                reader, writer = self.idle.pop()
            else:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            writer.write(head + body)
            status, answer, keep = await self._answer(reader)
            if keep:
                self.idle.append((reader, writer))
            else:
                writer.close()
        return status, answer

    @staticmethod
    async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = dict(
            (k.strip().lower(), v.strip()) for k, _, v in (h.partition(":") for h in lines[1:] if h)
        )  # fmt: skip
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while size := int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16):
                parts.append((await reader.readexactly(size + 2))[:-2])
            await reader.readuntil(b"\r\n")
            answer = b"".join(parts)
        else:
            answer = await reader.readexactly(int(headers.get("content-length", 0)))
        return status, answer, headers.get("connection", "").lower() != "close"

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


def _checked(status: int, answer: bytes) -> None:
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {answer[:300]!r}")


class _Cpu:
    """Server (process tree) and client (this process) CPU over one load, per request."""

    def __init__(self, base: str):
        self.pid = SERVER_PIDS.get(base)
        self.server, self.client = server_cpu_seconds(self.pid), time.process_time()

    def per_request(self, n: int) -> dict[str, float]:
        return {
            "server_cpu_ms_per_req": (server_cpu_seconds(self.pid) - self.server) / n * 1e3,
            "client_cpu_ms_per_req": (time.process_time() - self.client) / n * 1e3,
        }


def _single(ids: list[int], i: int, explain: bool) -> dict:
    return {"lead_id": ids[i % len(ids)], "explain": explain}


# The i-th request of a load: (route, JSON body). Default: a lead score by id.
Request = Callable[[int], tuple[str, dict]]


async def sequential(
    base: str, ids: list[int], explain: bool, n: int = 300, request: Request | None = None
) -> dict:
    request = request or (lambda i: (ROUTE, _single(ids, i, explain)))
    latencies = []
    http = RawHttp(base, 1)
    for i in range(20):  # warm-up (the first read opens the Feast registry and store)
        _checked(*await http.post(*request(i)))
    cpu = _Cpu(base)
    for i in range(n):
        started = time.perf_counter()
        status, answer = await http.post(*request(i))
        latencies.append((time.perf_counter() - started) * 1e3)
        _checked(status, answer)
    figures = percentiles(latencies) | cpu.per_request(n)
    await http.close()
    return figures


async def _closed_loop(base: str, ids: list[int], explain: bool, in_flight: int, n: int) -> dict:
    latencies: list[float] = []
    counter = iter(range(n))
    http = RawHttp(base, in_flight)

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            status, answer = await http.post(ROUTE, _single(ids, i, explain))
            latencies.append((time.perf_counter() - started) * 1e3)
            _checked(status, answer)

    cpu = _Cpu(base)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    figures = percentiles(latencies) | {"req_per_s": n / elapsed, "in_flight": in_flight}
    await http.close()
    return figures | cpu.per_request(n)


async def _paced(
    base: str,
    ids: list[int],
    explain: bool,
    rate: float,
    seconds: float,
    request: Request | None = None,
) -> dict:
    """Open loop: a request every 1/rate s whatever the answers do (latency includes queueing)."""
    request = request or (lambda i: (ROUTE, _single(ids, i, explain)))
    latencies: list[float] = []
    n = int(rate * seconds)
    http = RawHttp(base, 64)

    async def one(i: int) -> None:
        started = time.perf_counter()
        status, answer = await http.post(*request(i))
        latencies.append((time.perf_counter() - started) * 1e3)
        _checked(status, answer)

    for i in range(20):
        await one(i)
    latencies.clear()
    cpu = _Cpu(base)
    start = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    achieved = n / (time.perf_counter() - start)
    figures = percentiles(latencies) | {"target_rps": rate, "achieved_rps": achieved}
    await http.close()
    return figures | cpu.per_request(n)


def _lead_batch(ids: list[int], size: int) -> Request:
    return lambda i: (f"{ROUTE}/batch", {"lead_ids": [ids[(i * size + j) % len(ids)] for j in range(size)]})  # fmt: skip


async def _batches(
    base: str, ids: list[int], size: int, in_flight: int, n: int, request: Request | None = None
) -> dict:
    """Closed loop of batch requests of ``size`` predictions each."""
    request = request or _lead_batch(ids, size)
    counter = iter(range(n))
    latencies: list[float] = []
    http = RawHttp(base, in_flight)

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            status, answer = await http.post(*request(i))
            latencies.append((time.perf_counter() - started) * 1e3)
            _checked(status, answer)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    await http.close()
    return percentiles(latencies) | {"predictions_per_s": n * size / elapsed, "batch": size}


def _measure(results: dict, name: str, load, *args) -> None:
    """Run one load case (a coroutine function runs in its own loop); a failure is recorded and
    printed instead of ending the benchmark."""
    try:
        out = load(*args)
        results[name] = asyncio.run(out) if asyncio.iscoroutine(out) else out
    except Exception as exc:  # noqa: BLE001 - the other cases still say something
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print(f"  {name}: {_short(results[name])}", flush=True)


def main(customers: int = 1500, data_dir: str | None = None) -> dict:
    """Build the world (or reuse ``data_dir`` holding one), measure, print; returns every figure."""
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as tmp:
        settings = Settings(
            data_dir=Path(data_dir or Path(tmp) / "data"), optuna_trials=2, api_token=TOKEN,
            max_batch_size=1000,
        )  # fmt: skip
        settings.ensure_dirs()
        if not (settings.data_dir / "features" / "lead_profile.parquet").exists():
            print("building the world (demo CRM, Feast, lead_scoring champion):", flush=True)
            build_world(settings, customers)
        ids = lead_ids(settings)
        print(f"  {len(ids)} lead ids in the online store", flush=True)
        results["machine"] = {"load_average_1m": os.getloadavg()[0], "cpus": os.cpu_count()}
        # The per-request BentoML work the server ran with (CRM_PREDICT_* variables set them).
        results["server"] = settings.model_dump(
            include={"access_log", "request_metrics", "request_tracing", "serving_workers"}
        )
        results |= in_process_floor(settings, ids)
        with server(settings, Path(tmp) / "server.log") as base:
            for explain in (False, True):
                key = "explain" if explain else "plain"
                _measure(results, f"http_sequential_{key}", sequential, base, ids, explain)
                for in_flight in (8, 32):
                    _measure(
                        results, f"http_concurrent{in_flight}_{key}",
                        _closed_loop, base, ids, explain, in_flight, 400,
                    )  # fmt: skip
                _measure(results, f"http_paced200_{key}", _paced, base, ids, explain, 200, 4)
            _measure(results, "http_batch100", _batches, base, ids, 100, 4, 60)
        results["machine"]["load_average_1m_after"] = os.getloadavg()[0]
    print_table(results)
    return results


def print_table(results: dict[str, dict]) -> None:
    print(f"{'case':32s} {'p50 ms':>8s} {'p99 ms':>8s}  throughput / notes")
    for case, r in results.items():
        if "p50_ms" not in r:
            print(f"{case:32s} {r}")
            continue
        rate = (
            f"{r['req_per_s']:.0f} req/s" if "req_per_s" in r
            else f"{r['achieved_rps']:.0f} req/s (target {r['target_rps']:.0f})" if "achieved_rps" in r
            else f"{r['predictions_per_s']:.0f} predictions/s" if "predictions_per_s" in r
            else f"read p50 {r['feast_read_p50_ms']:.2f} ms, CPU {r['cpu_ms_per_prediction']:.2f} ms/prediction" if "feast_read_p50_ms" in r
            else ""
        )  # fmt: skip
        if "server_cpu_ms_per_req" in r:
            cpu = f"CPU/req server {r['server_cpu_ms_per_req']:.2f} ms, client {r['client_cpu_ms_per_req']:.2f} ms"  # fmt: skip
            rate = f"{rate}; {cpu}" if rate else cpu
        print(f"{case:32s} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}  {rate}")

    def figure(case: str, key: str) -> float:
        return results.get(case, {}).get(key, float("nan"))

    targets = [
        ("p99 ≤ 10 ms at 200 req/s (no explain)", figure("http_paced200_plain", "p99_ms") <= 10),
        ("p99 ≤ 20 ms at 200 req/s (explain)", figure("http_paced200_explain", "p99_ms") <= 20),
        (
            "≥ 1,000 predictions/s with batching",
            figure("http_batch100", "predictions_per_s") >= 1000,
        ),  # fmt: skip
    ]
    for label, met in targets:
        print(f"target {label}: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1500, *sys.argv[2:3])
