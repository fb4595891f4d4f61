"""Benchmark: HNSW against exact search over a synthetic catalogue (recall@10, queries/s).

    python -m bench.index [--sizes 100000 1000000] [--dim 576] [--queries 1000]
                          [--threads N] [--repeats 3] [--params params.yaml] [--out FILE]

Writes bench/results/index.json. Per size n: n unit vectors of dimension `--dim` (576, the
hidden size of SmolLM2-135M, the default base model) with the latent structure of
recfound.index.synthetic, and `--queries` queries drawn alike. Both index kinds of
recfound.index.store are built with params.yaml's `index` knobs (build seconds each); exact
search gives the true top 10, against which HNSW's recall@10 is measured. Then `--repeats`
timed rounds, each searching all queries once with each index, the order alternating per
round, so load from other processes on a shared machine falls on both alike; reported:
median queries/s of each and their ratio. Threads are set explicitly (faiss and BLAS), and
recorded. `--sizes 5000` makes a quick check.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import faiss
import numpy as np

from bench import machine, write_result
from recfound.config import IndexConfig, load_config
from recfound.index.metrics import recall_at_k
from recfound.index.store import CatalogueIndex
from recfound.index.synthetic import LatentVectors

RESULTS = Path("bench/results/index.json")
DEFAULT_SIZES = (100_000, 1_000_000)
HIDDEN_SMOLLM2_135M = 576
K = 10
SEED = 0


def timed_build(vectors: np.ndarray, ids: list[str], cfg: IndexConfig, kind: str):
    start = time.perf_counter()
    index = CatalogueIndex.build(vectors, ids, cfg, kind=kind)
    return index, time.perf_counter() - start


def bench_size(n: int, dim: int, n_queries: int, repeats: int, cfg: IndexConfig) -> dict:
    """Build both kinds over n synthetic vectors, measure HNSW recall@10 and both speeds."""
    draw = LatentVectors(dim, SEED)
    vectors, queries = draw.draw(n), draw.draw(n_queries)
    ids = [str(i) for i in range(n)]
    indexes, build_s = {}, {}
    for kind in ("exact", "hnsw"):
        print(f"n={n:,}: building {kind}", flush=True)
        indexes[kind], build_s[kind] = timed_build(vectors, ids, cfg, kind)
    del vectors
    truth = indexes["exact"].search(queries, K).ids
    recall = recall_at_k(indexes["hnsw"].search(queries, K).ids, truth, K)
    seconds: dict[str, list[float]] = {"exact": [], "hnsw": []}
    for round_ in range(repeats):
        for kind in ("exact", "hnsw") if round_ % 2 == 0 else ("hnsw", "exact"):
            start = time.perf_counter()
            indexes[kind].search(queries, K)
            seconds[kind].append(time.perf_counter() - start)
    qps = {kind: n_queries / statistics.median(s) for kind, s in seconds.items()}
    return {
        "items": n,
        "recall_at_10_hnsw_vs_exact": round(float(recall.mean()), 5),
        "min_query_recall_at_10": round(float(recall.min()), 3),
        "queries_per_s": {kind: round(v, 1) for kind, v in qps.items()},
        "hnsw_speedup": round(qps["hnsw"] / qps["exact"], 2),
        "build_s": {kind: round(v, 2) for kind, v in build_s.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    """Run every size, write the JSON; returns the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--dim", type=int, default=HIDDEN_SMOLLM2_135M)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    cfg = load_config(args.params).index
    faiss.omp_set_num_threads(args.threads)
    result = {
        "k": K,
        "dim": args.dim,
        "queries": args.queries,
        "repeats": args.repeats,
        "threads": args.threads,
        "knobs": cfg.model_dump(include={"hnsw_m", "hnsw_ef_construction", "hnsw_ef_search"}),
        "sizes": [bench_size(n, args.dim, args.queries, args.repeats, cfg) for n in args.sizes],
        "machine": machine(faiss=faiss.__version__),
    }
    write_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
