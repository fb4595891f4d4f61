"""Benchmark: the build stage on a large synthetic raw dataset (throughput and peak memory).

    python -m bench.build [--reviews 1000000] [--params params.yaml] [--out FILE] [--keep DIR]

Writes bench/results/build.json. Steps:

1. Generate raw data in five of the six formats (all but Amazon Reviews 2014/2018) from one
   latent world (recfound.data.sample), sized so that `write_reviews` streams exactly
   `--reviews` Amazon reviews: users = reviews / mean purchases per user (+ margin), items
   scaled with users as in params.yaml.
   The other sources keep their sizes from params.yaml `sample`. Untimed for the build.
2. Run the real stage, `recfound stage build`, in a child process on that data (outputs in a
   temp directory), and measure its wall time and its peak resident memory
   (getrusage(RUSAGE_CHILDREN).ru_maxrss: the largest peak among waited-for children).
   By default the train and validation splits are uncapped (every sample the data yields,
   the setting for a user's own data); `--capped` keeps params.yaml's caps.

Reported: reviews, users, items, generation seconds, build wall seconds, reviews/s
(= reviews / build wall seconds, the child's interpreter start and imports included: what a
user waits for), peak RSS in MiB, whether it is under the target, rows kept per split and
per task (from the build's build.json) and the ingest report's totals (read, kept, dropped).
`--reviews 20000` makes a quick check.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import datasets
import yaml

from bench import machine, write_result
from recfound.config import SampleConfig, load_config
from recfound.data import sample
from recfound.data.latent import make_world
from recfound.data.schema import SPLITS
from recfound.data.unified import read_manifest

RESULTS = Path("bench/results/build.json")
DEFAULT_REVIEWS = 1_000_000
TARGET_PEAK_RSS_MIB = 2048  # the target: building 1M reviews in under 2 GB
# Users are drawn with mean (min_sequence + max_sequence) / 2 purchases; 10 % more users than
# that mean implies makes running out of reviews before the requested count unlikely.
USER_MARGIN = 1.1
KIB_PER_MIB = 1024


def bench_sample_config(base: SampleConfig, n_reviews: int) -> SampleConfig:
    """`base` with enough users for `n_reviews` reviews and items scaled in proportion."""
    mean_purchases = (base.min_sequence + base.max_sequence) / 2
    n_users = math.ceil(n_reviews / mean_purchases * USER_MARGIN)
    n_items = max(base.n_items, math.ceil(n_users * base.n_items / base.n_users))
    return base.model_copy(update={"n_users": n_users, "n_items": n_items})


def write_raw_data(out_dir: Path, cfg: SampleConfig, n_reviews: int) -> int:
    """Five of the six sources (all but Amazon Reviews 2014/2018) under `out_dir` from one
    world, reviews capped at `n_reviews`.

    The same writers, in the same layout, as `recfound.data.sample.write_sample`; only the
    review count differs. Returns the number of reviews written.
    """
    world = make_world(cfg)
    sample.write_item_meta(out_dir / "amazon_reviews", world)
    written = sum(sample.write_reviews(out_dir / "amazon_reviews", world, n_reviews).values())
    sample.write_esci(out_dir / "esci", sample.esci_examples(world))
    (out_dir / "amazonqa").mkdir(parents=True, exist_ok=True)
    with open(out_dir / "amazonqa" / "train-qar.jsonl", "w", encoding="utf-8") as handle:
        for record in sample.amazonqa_records(world):
            handle.write(json.dumps(sample.amazonqa_json(record), ensure_ascii=False) + "\n")
    sample.write_movielens(out_dir / "movielens" / "ml-100k", world)
    sample.write_amazon_google(out_dir / "amazon_google", world)
    return written


def _child_params(params: Path, workdir: Path, capped: bool) -> Path:
    """A copy of `params` whose raw-data and unified paths point into `workdir`, with MLflow
    tracking off (a benchmark run is not a pipeline run to record) and, unless `capped`, the
    train and validation splits uncapped."""
    raw = yaml.safe_load(params.read_text(encoding="utf-8"))
    raw.setdefault("paths", {}).update(data=str(workdir / "data"), unified=str(workdir / "unified"))
    raw.setdefault("tracking", {})["enabled"] = False
    if not capped:
        raw.setdefault("build", {}).update(train_per_task=None, validation_per_task=None)
    path = workdir / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _size_mib(directory: Path) -> float:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file()) / 2**20


def run_build(params: Path) -> tuple[float, float]:
    """Run `recfound stage build` in a child process; (wall seconds, child peak RSS MiB)."""
    command = [sys.executable, "-m", "recfound.cli", "stage", "build", "--params", str(params)]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    # Linux reports ru_maxrss in KiB.
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, peak_kib / KIB_PER_MIB


def main(argv: list[str] | None = None) -> dict:
    """Generate, build, measure, write the JSON; returns the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=DEFAULT_REVIEWS)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", type=Path, help="work here and keep the data (default: temp)")
    parser.add_argument("--capped", action="store_true", help="keep params.yaml's split caps")
    args = parser.parse_args(argv)

    cfg = load_config(args.params)
    sample_cfg = bench_sample_config(cfg.sample, args.reviews)
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        print(
            f"generating {args.reviews:,} reviews "
            f"({sample_cfg.n_users:,} users, {sample_cfg.n_items:,} items) in {workdir / 'data'}",
            flush=True,
        )
        start = time.perf_counter()
        written = write_raw_data(workdir / "data", sample_cfg, args.reviews)
        generate_s = time.perf_counter() - start
        if written != args.reviews:
            raise SystemExit(f"the world held only {written:,} reviews; raise USER_MARGIN")
        print(f"generated in {generate_s:.1f} s; building", flush=True)
        build_s, peak_mib = run_build(_child_params(args.params, workdir, args.capped))
        unified = datasets.load_from_disk(str(workdir / "unified"))
        manifest = read_manifest(workdir / "unified")
        files = manifest["ingest"]["files"]
        result = {
            "reviews": written,
            "users": sample_cfg.n_users,
            "items": sample_cfg.n_items,
            "raw_mib": round(_size_mib(workdir / "data"), 1),
            "generate_s": round(generate_s, 2),
            "build_wall_s": round(build_s, 2),
            "reviews_per_s": round(written / build_s, 1),
            "peak_rss_mib": round(peak_mib, 1),
            "target_peak_rss_mib": TARGET_PEAK_RSS_MIB,
            "under_target": peak_mib < TARGET_PEAK_RSS_MIB,
            "capped": args.capped,
            "unified_rows": {split: unified[split].num_rows for split in unified},
            "rows_kept_per_task": {
                code: {split: sum(c[split] for c in by_source.values()) for split in SPLITS}
                for code, by_source in manifest["rows"].items()
            },
            "ingest": {
                "files": len(files),
                "read": sum(f["read"] for f in files),
                "kept": sum(f["kept"] for f in files),
                "dropped": sum(sum(f["dropped"].values()) for f in files),
            },
            "machine": machine(),
        }
    write_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
