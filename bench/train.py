"""Benchmark: training throughput and what S2Sched's validation passes cost.

    python -m bench.train [--params params.yaml] [--steps 16] [--tiny] [--out FILE]

Writes bench/results/train.json. Runs the real training loop (recfound.train) at the settings
of params.yaml — base model paths.base_model, unified data paths.unified — for `--steps` steps,
with outputs in a temp directory, twice:

- `s2sched`: S2Sched as configured; its validation passes (every `s2sched.update_interval`
  steps) are timed apart from the training steps;
- `fixed_mix`: `s2sched.enabled: false` (data-proportional mix, no validation passes).

Reported per run: tokens trained, seconds in training steps, tokens/s of the steps alone and,
for `s2sched`, tokens/s counting the validation passes too; and `s2sched_cost_pct` = validation
seconds / (steps + validation seconds) · 100 (target ≤ 10). The default `--steps` is two
update intervals, so validation passes fall at the same rate as in a full run.
Untimed: model loading and checkpoint writing; the before/after validation losses of a real run
are skipped.

`--tiny`: the tiny random Llama and a small synthetic unified dataset, for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from recfound.atomic import atomic_file
from recfound.config import Config, load_config
from recfound.train.loop import TrainOutcome
from recfound.train.stage import train

RESULTS = Path("bench/results/train.json")
TARGET_S2SCHED_COST_PCT = 10.0


def _run(cfg: Config, workdir: Path, steps: int, s2sched: bool) -> tuple[TrainOutcome, float]:
    """Train `steps` steps with outputs under `workdir`; returns the outcome and wall seconds."""
    paths = cfg.paths.model_copy(
        update={
            "checkpoints": workdir / "checkpoints",
            "adapter": workdir / "adapter",
            "train_metrics": workdir / "metrics",
        }
    )
    run_cfg = cfg.model_copy(
        update={
            "paths": paths,
            "train": cfg.train.model_copy(update={"steps": steps, "save_every": steps}),
            "s2sched": cfg.s2sched.model_copy(update={"enabled": s2sched}),
        }
    )
    start = time.perf_counter()
    outcome = train(run_cfg, report_val_loss=False)
    return outcome, time.perf_counter() - start


def _summary(outcome: TrainOutcome, wall: float) -> dict:
    steps_s = outcome.train_seconds
    with_val = steps_s + outcome.schedule_seconds
    return {
        "steps": outcome.steps,
        "tokens": outcome.tokens,
        "step_seconds": round(steps_s, 3),
        "validation_seconds": round(outcome.schedule_seconds, 3),
        "seconds_per_step": round(steps_s / outcome.steps, 3),
        "tokens_per_s_steps_only": round(outcome.tokens / steps_s, 1),
        "tokens_per_s_with_validation": round(outcome.tokens / with_val, 1),
        "wall_seconds_incl_untimed": round(wall, 1),
        "final_loss": outcome.last_record.get("loss"),
    }


def _tiny_config(workdir: Path) -> Config:
    from recfound.model.tiny import build_tiny_llama
    from recfound.train.smoke import write_synthetic_unified

    base = build_tiny_llama(workdir / "tiny-llama")
    unified = write_synthetic_unified(workdir / "unified")
    return Config().model_copy(
        update={"paths": Config().paths.model_copy(update={"base_model": base, "unified": unified})}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--steps", type=int, default=None, help="default: 2 update intervals")
    parser.add_argument("--tiny", action="store_true", help="tiny model + synthetic data")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        workdir = Path(tmp)
        cfg = _tiny_config(workdir) if args.tiny else load_config(args.params)
        if not (Path(cfg.paths.base_model) / "config.json").is_file():
            raise SystemExit(
                f"{cfg.paths.base_model}: no base model; run `recfound stage base_model`"
            )
        steps = args.steps or 2 * cfg.s2sched.update_interval
        runs = {}
        for name, enabled in (("s2sched", True), ("fixed_mix", False)):
            outcome, wall = _run(cfg, workdir / name, steps, enabled)
            runs[name] = _summary(outcome, wall)
    sched = runs["s2sched"]
    cost = 100 * sched["validation_seconds"] / (sched["step_seconds"] + sched["validation_seconds"])
    result = {
        "benchmark": "train",
        "mode": "tiny" if args.tiny else "default",
        "machine": {
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "settings": {
            "base_model": str(cfg.paths.base_model),
            "adapter": cfg.model.adapter,
            "train": cfg.train.model_dump(mode="json", include={
                "embedding_per_batch", "generative_per_batch", "group_size", "grad_accum",
                "max_len_query", "max_len_passage", "max_len_prompt", "max_len_response",
            }),
            "s2sched": cfg.s2sched.model_dump(mode="json"),
            "steps": steps,
        },
        "runs": runs,
        "s2sched_cost_pct": round(cost, 2),
        "target_s2sched_cost_pct": TARGET_S2SCHED_COST_PCT,
        "meets_target": cost <= TARGET_S2SCHED_COST_PCT,
    }  # fmt: skip
    with atomic_file(args.out) as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    print(json.dumps({"runs": runs, "s2sched_cost_pct": result["s2sched_cost_pct"]}, indent=2))
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
