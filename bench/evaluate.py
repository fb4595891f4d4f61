"""Benchmark: the evaluate stage of an older revision against this tree's, on one run's artifacts.

    python -m bench.evaluate [--old REV] [--rounds 2] [--params params.yaml] [--out FILE]

Writes bench/results/evaluate.json. Both sides evaluate the artifacts of the run this
params.yaml names (`paths.base_model`, `merged`, `adapter`, `checkpoints`, `unified`, `index`,
`train_metrics`): run `make repro` (or `dvc repro`) first. Each evaluation runs the stage's
function (`recfound.evaluate.stage:run`, no MLflow run, no stage lock) in a process of its own,
and writes its reports into a temporary directory (the run's `reports/variants` copied in), so
nothing of the run changes.

- new: this working tree's code with this params.yaml;
- old: the code of git revision `--old` (default 7bf9e0a, before the shared Predictor), taken
  with `git archive` into a temporary directory (git's own state is untouched), with that
  revision's params.yaml, its `paths` replaced by this params.yaml's: the settings that code
  was written against, on the same artifacts.

The `--rounds` rounds interleave the two, the order alternating (old new, new old, …), so load
from other processes on a shared machine falls on both alike. Reported: each evaluation's
seconds (the stage function, and the whole process with its imports), the medians and the
new / old ratio (target ≤ 0.5), and whether the two wrote the same results: every system's
primary metric per task, with the differences listed and the tasks on which RecFound is above
the base model on each side.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import yaml

from bench import machine, write_result
from recfound.config import Config, load_config
from recfound.evaluate.protocol import primary_metric
from recfound.tasks import BY_CODE

RESULTS = Path("bench/results/evaluate.json")
# The last commit before the shared Predictor, query reuse, decode-time merge and cached
# fingerprints (issue 22).
DEFAULT_OLD = "7bf9e0a"
ENTRY = "recfound.evaluate.stage:run"
VARIANTS_DIR = "variants"
METRICS_FILE = "metrics.json"
# Run in the child: load the params, time the stage function, print the seconds as JSON.
RUNNER = """\
import importlib, json, sys, time
from recfound.config import load_config
module, _, name = sys.argv[2].partition(":")
function = getattr(importlib.import_module(module), name)
cfg = load_config(sys.argv[1])
start = time.perf_counter()
function(cfg)
print("BENCH_SECONDS " + json.dumps(time.perf_counter() - start))
"""
RUNNER_FILE = "bench_evaluate_runner.py"


def round_order(rounds: int) -> list[tuple[str, str]]:
    """(side, side) per round: old first in even rounds, new first in odd ones."""
    return [("old", "new") if r % 2 == 0 else ("new", "old") for r in range(rounds)]


def git(*args: str) -> bytes:
    return subprocess.run(["git", *args], check=True, capture_output=True).stdout


def export_revision(rev: str, into: Path) -> dict[str, Any]:
    """The `recfound` package of `rev` unpacked under `into`, with the dvc.yaml and params.yaml
    beside it that its code reads from its project root; returns that params.yaml as a dict."""
    tar_bytes = git("archive", "--format=tar", rev, "recfound", "dvc.yaml", "params.yaml")
    with tarfile.open(fileobj=BytesIO(tar_bytes)) as tar:
        tar.extractall(into, filter="data")
    return yaml.safe_load((into / "params.yaml").read_text(encoding="utf-8"))


def with_paths(doc: dict[str, Any], cfg: Config, reports: Path) -> dict[str, Any]:
    """`doc` (a params.yaml) with every `paths` entry it has set to `cfg`'s, and its reports
    written to `reports`."""
    doc = json.loads(json.dumps(doc))  # a deep copy
    now = cfg.model_dump(mode="json")["paths"]
    doc["paths"] = {key: now.get(key, value) for key, value in doc.get("paths", {}).items()}
    doc["paths"]["reports"] = str(reports)
    return doc


def side_setup(root: Path, name: str, doc: dict[str, Any], cfg: Config) -> Path:
    """A params file for one side, whose reports directory starts as a copy of the run's
    `reports/variants` (what the tables compare with)."""
    reports = root / f"{name}-reports"
    variants = Path(cfg.paths.reports) / VARIANTS_DIR
    if variants.is_dir():
        shutil.copytree(variants, reports / VARIANTS_DIR)
    reports.mkdir(parents=True, exist_ok=True)
    params = root / f"{name}-params.yaml"
    params.write_text(yaml.safe_dump(with_paths(doc, cfg, reports), sort_keys=False))
    return params


def run_side(code_dir: Path, params: Path, entry: str) -> dict[str, float]:
    """Run the evaluation once in a child process whose `recfound` is the one beside the
    runner script in `code_dir` (or, with none there, the installed one)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(code_dir / RUNNER_FILE), str(params), entry],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"evaluate ({code_dir}) failed:\n{done.stderr[-4000:]}")
    marker = [line for line in done.stdout.splitlines() if line.startswith("BENCH_SECONDS ")]
    return {"stage_s": round(float(marker[-1].split()[1]), 1), "process_s": round(wall, 1)}


def primary_scores(metrics: dict[str, Any], cutoff: int) -> dict[str, dict[str, float]]:
    """system -> task -> its primary metric (`protocol.primary_metric`) in a metrics.json."""
    scores: dict[str, dict[str, float]] = {}
    for system, tasks in metrics.items():
        if not isinstance(tasks, dict):
            continue
        for code, values in tasks.items():
            if code not in BY_CODE or not isinstance(values, dict):
                continue
            key = primary_metric(BY_CODE[code], cutoff)
            if key in values:
                scores.setdefault(system, {})[code] = float(values[key])
    return scores


def compare(old: dict[str, Any], new: dict[str, Any], cutoff: int) -> dict[str, Any]:
    """Every (system, task) whose primary metric differs between the two metrics.json, and on
    how many tasks RecFound is above the base model on each side."""
    before, after = primary_scores(old, cutoff), primary_scores(new, cutoff)
    differences = [
        {"system": system, "task": task, "old": before[system][task], "new": score}
        for system, tasks in sorted(after.items())
        for task, score in sorted(tasks.items())
        if task in before.get(system, {}) and before[system][task] != score
    ]

    def above_base(scores: dict[str, dict[str, float]]) -> int:
        ours, base = scores.get("recfound", {}), scores.get("base", {})
        return sum(ours[t] > base[t] for t in ours if t in base)

    return {
        "same_primary_metrics": not differences,
        "differences": differences,
        "recfound_above_base": {"old": above_base(before), "new": above_base(after)},
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the interleaved rounds, write the JSON; returns the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default=DEFAULT_OLD, help="git revision of the old code")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--entry", default=ENTRY, help="module:function of the stage")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    cfg = load_config(args.params)
    seconds: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        root = Path(tmp)
        code = {"old": root / "old-code", "new": root / "new-code"}
        for directory in code.values():
            directory.mkdir()
            (directory / RUNNER_FILE).write_text(RUNNER)
        old_doc = export_revision(args.old, code["old"])
        new_doc = yaml.safe_load(args.params.read_text(encoding="utf-8"))
        params = {
            "old": side_setup(root, "old", old_doc, cfg),
            "new": side_setup(root, "new", new_doc, cfg),
        }
        for number, order in enumerate(round_order(args.rounds), start=1):
            for side in order:
                print(f"round {number}: {side} evaluate", flush=True)
                seconds[side].append(run_side(code[side], params[side], args.entry))
                print(f"  {seconds[side][-1]}", flush=True)
        metrics = {
            side: json.loads((root / f"{side}-reports" / METRICS_FILE).read_text("utf-8"))
            for side in ("old", "new")
        }
    median = {side: statistics.median(r["stage_s"] for r in runs) for side, runs in seconds.items()}
    result = {
        "old": args.old,
        "new": git("rev-parse", "--short", "HEAD").decode().strip() + " + working tree",
        "rounds": args.rounds,
        "order": round_order(args.rounds),
        "seconds": seconds,
        "median_stage_s": median,
        "new_over_old": round(median["new"] / median["old"], 3),
        "results": compare(metrics["old"], metrics["new"], cfg.evaluate.rank_cutoff),
        "dtype": cfg.model.dtype,
        "machine": machine(),
    }
    write_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
