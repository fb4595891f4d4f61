"""Benchmark: the served model under load (latency, requests/s) and its index (recall, speed).

    python -m bench.serve [--model-uri models:/recfound/latest] [--concurrency 1 4 8]
                          [--requests 200] [--max-seconds 60] [--repeats 2] [--server-threads N]
                          [--index-sizes 100000 1000000] [--index-queries 1000]
                          [--index-repeats 3] [--index-threads N]
                          [--params params.yaml] [--out FILE]

Writes bench/results/serve.json. Two parts:

1. Load. `mlflow models serve` of `--model-uri` (default: the latest version of params.yaml's
   `tracking.registered_model` in its `tracking.uri`; MLFLOW_TRACKING_URI overrides) on
   127.0.0.1, the server's torch/BLAS threads set to `--server-threads`. Two request kinds,
   one row each: a retrieval row (`task` Q2I, a query, `k` 10) and an embedding row (the
   same query, no `k`). Per kind and concurrency level c, c client threads (stdlib urllib)
   send `--requests` requests in all, stopping early after `--max-seconds`; each is timed
   from send to full answer. The model computes one request at a time (docs/recommend.md,
   "From the server"), so c > 1 measures queueing. Rounds
   (`--repeats`) alternate the order of the two kinds, so load from other processes on a
   shared machine falls on both alike. Reported per kind and level: p50 and p99 latency (ms,
   over every request of every round), requests/s (median over rounds), and the count of
   requests not answered 200, refusals and timeouts included (any fails the bench, after
   the JSON is written). Three requests of each kind warm the server first, untimed.
2. Index. bench/index.py's measurement (imported, not copied) at `--index-sizes` synthetic
   items: the HNSW index's recall@10 against exact search and queries/s of both. The default,
   100k and 1M items, takes minutes at 1M; `--index-sizes 0` skips the part.

`--requests 12 --concurrency 1 2 --index-sizes 2000` makes a quick check.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path

import faiss
import numpy as np

from bench import machine, write_result
from bench.index import HIDDEN_SMOLLM2_135M, bench_size
from recfound.config import Config, load_config
from recfound.tracking.serving import Served, post_json, serve_model

RESULTS = Path("bench/results/serve.json")
DEFAULT_CONCURRENCY = (1, 4, 8)
DEFAULT_INDEX_SIZES = (100_000, 1_000_000)
WARMUP_REQUESTS = 3
K = 10
# Query texts the requests cycle through (their content changes little: one short row each).
QUERIES = (
    "waterproof hiking boots",
    "wireless earbuds with long battery life",
    "stainless steel frying pan",
    "moisturising face cream for dry skin",
    "usb-c charging cable 2 m",
    "cast iron skillet",
    "noise cancelling headphones",
    "vitamin c serum",
)


def request_body(kind: str, query: str) -> dict:
    """One row: retrieval (Q2I with k) or embedding (Q2I without k)."""
    if kind == "retrieval":
        return {"dataframe_split": {"columns": ["task", "input", "k"], "data": [["Q2I", query, K]]}}
    return {"dataframe_split": {"columns": ["task", "input"], "data": [["Q2I", query]]}}


def load_round(served: Served, kind: str, concurrency: int, requests: int, max_s: float) -> dict:
    """`concurrency` threads share `requests` requests (fewer if `max_s` runs out)."""
    latencies: list[float] = []
    failures: list[str] = []  # status and the start of the answer, per failed request
    issued = iter(range(requests))
    lock = threading.Lock()
    deadline = time.monotonic() + max_s

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                number = next(issued, None)
            if number is None:
                return
            body = request_body(kind, QUERIES[number % len(QUERIES)])
            start = time.perf_counter()
            try:
                status, answer = post_json(served.invocations, body)
            except OSError as err:  # refused, reset or timed out: counted, not fatal to the thread
                status, answer = 0, repr(err)
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if status != 200:
                    failures.append(f"{status}: {str(answer)[:300]}")

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"latencies": latencies, "failures": failures, "per_s": len(latencies) / wall}


def load_test(served: Served, levels: list[int], requests: int, max_s: float, repeats: int):
    """Per kind and level: p50/p99 ms, median requests/s over rounds, non-200 answers."""
    kinds = ("retrieval", "embedding")
    for kind in kinds:
        for number in range(WARMUP_REQUESTS):
            status, answer = post_json(served.invocations, request_body(kind, QUERIES[number]))
            if status != 200:
                raise RuntimeError(f"warm-up {kind} request answered {status}: {answer}")
    rounds: dict[tuple[str, int], list[dict]] = {(k, c): [] for k in kinds for c in levels}
    for round_ in range(repeats):
        for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
            for level in levels:
                print(f"round {round_ + 1}/{repeats}: {kind} at concurrency {level}", flush=True)
                rounds[kind, level].append(load_round(served, kind, level, requests, max_s))
    results = []
    for (kind, level), runs in rounds.items():
        ms = 1000 * np.array([t for run in runs for t in run["latencies"]])
        results.append(
            {
                "kind": kind,
                "concurrency": level,
                "requests": len(ms),
                "p50_ms": round(float(np.percentile(ms, 50)), 2),
                "p99_ms": round(float(np.percentile(ms, 99)), 2),
                "requests_per_s": round(statistics.median(r["per_s"] for r in runs), 2),
                "non_200": sum(len(r["failures"]) for r in runs),
                "failures": [f for r in runs for f in r["failures"]][:3],
            }
        )
    return results


def default_model_uri(cfg: Config) -> str:
    return f"models:/{cfg.tracking.registered_model}/latest"


def main(argv: list[str] | None = None) -> dict:
    """Run the load test and the index measurement, write the JSON; returns the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", help="default: models:/<tracking.registered_model>/latest")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(DEFAULT_CONCURRENCY))
    parser.add_argument("--requests", type=int, default=200, help="per kind, level and round")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per kind, level, round")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--server-threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--index-sizes", type=int, nargs="+", default=list(DEFAULT_INDEX_SIZES))
    parser.add_argument("--index-queries", type=int, default=1000)
    parser.add_argument("--index-repeats", type=int, default=3)
    parser.add_argument("--index-threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    cfg = load_config(args.params)
    model_uri = args.model_uri or default_model_uri(cfg)
    threads = str(args.server_threads)
    env = {
        "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI", cfg.tracking.uri),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    print(f"serving {model_uri} on loopback", flush=True)
    with serve_model(model_uri, env) as served:
        load = load_test(served, args.concurrency, args.requests, args.max_seconds, args.repeats)
    faiss.omp_set_num_threads(args.index_threads)
    sizes = [n for n in args.index_sizes if n > 0]
    index = [
        bench_size(n, HIDDEN_SMOLLM2_135M, args.index_queries, args.index_repeats, cfg.index)
        for n in sizes
    ]
    result = {
        "model_uri": model_uri,
        "k": K,
        "requests_per_level": args.requests,
        "max_seconds_per_level": args.max_seconds,
        "repeats": args.repeats,
        "server_threads": args.server_threads,
        "load": load,
        "index": {
            "queries": args.index_queries,
            "repeats": args.index_repeats,
            "threads": args.index_threads,
            "knobs": cfg.index.model_dump(
                include={"hnsw_m", "hnsw_ef_construction", "hnsw_ef_search"}
            ),
            "sizes": index,
        },
        "machine": machine(faiss=faiss.__version__),
    }
    write_result(result, args.out)
    failed = sum(row["non_200"] for row in load)
    if failed:
        raise SystemExit(f"{failed} requests were not answered 200 (see {args.out})")
    return result


if __name__ == "__main__":
    main()
