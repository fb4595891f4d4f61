"""Benchmark: training throughput of the former and the current step, as paired ratios.

    python -m bench.train [--params params.yaml] [--pairs 6] [--tiny] [--out FILE]

Writes bench/results/train.json. Builds the real trainer (recfound.train.stage.build_trainer)
at the settings of params.yaml — base model paths.base_model, unified data paths.unified — and
runs two variants of it on the same step, in alternating order (A B, B A, …), each round one
training step and one S2Sched validation pass of each:

- `before`, the former path: generative rows as one sub-batch per task, LM-head logits at every
  position (prompt included), AdamW looping over the parameter tensors one by one (torch's
  default on CPU), S2Sched's validation one task at a time in chunks of
  `s2sched.val_batch_size` (one chunk per task);
- `after`, the current code: generative rows of all tasks in length groups
  (`train.max_padding_share`), logits at the response positions only, fused AdamW where torch
  has it, the validation rows of a kind together in chunks of `train.eval_batch_size`.

Both variants train the same adapter (one optimizer each over the same parameters) on the
same rows: each round restores the sampler and S2Sched before each variant's step, so they do
exactly the same work; `train.grad_cache` is as configured in both.
A round's after/before ratios are paired: load from other processes on a shared machine falls
on both halves of a round alike, which two runs one after the other would not give. Reported:
per variant the median samples/s (and real tokens/s) of the steps and median seconds of the
validation passes; the median, min and max of the paired ratios; and `s2sched_cost_pct` of
`after` = validation seconds / (update_interval × step seconds + validation seconds) · 100
(target ≤ 10). Untimed: model loading and one warm-up round.

TMoLE multiplies only the experts of a batch's task kind in both variants: it has no switch to
compute all experts (recfound.model.tmole), so that change is not part of the ratio.

`--tiny`: the tiny random Llama and a small synthetic unified dataset, for a smoke run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench import machine, write_result
from recfound.config import Config, load_config
from recfound.model.losses import per_sample_lm_loss
from recfound.tasks import TASKS
from recfound.train.batches import Batch, BatchEncoder
from recfound.train.loop import Trainer
from recfound.train.objective import validation_losses
from recfound.train.stage import build_trainer

RESULTS = Path("bench/results/train.json")
TARGET_S2SCHED_COST_PCT = 10.0
VARIANTS = ("before", "after")


class PerTaskBatches:
    """The former generative batching: the rows of each task as their own sub-batch."""

    def __init__(self, encoder: BatchEncoder) -> None:
        self.encoder = encoder

    def micro_batch(
        self, embedding_rows: Sequence[int], generative_rows: Sequence[int], *, draw: int | None
    ) -> Batch:
        batch = self.encoder.micro_batch(embedding_rows, [], draw=draw)
        tasks = self.encoder.split.select_columns(["task_id"])[list(generative_rows)]["task_id"]
        by_task: dict[int, list[int]] = defaultdict(list)
        for row, task in zip(generative_rows, tasks, strict=True):
            by_task[int(task)].append(int(row))
        batch["generative"] = [
            b for t in sorted(by_task) for b in self.encoder.generative(by_task[t])
        ]
        return batch

    def row_ids(self, indices: Sequence[int]) -> list[str]:
        return self.encoder.row_ids(indices)


def full_logits_generative_loss(model: Any) -> Any:
    """The former `RecFoundModel.generative_loss`: logits at every position, prompt included."""
    from recfound.model.losses import response_positions
    from recfound.model.unified import position_ids_from_mask

    def generative_loss(input_ids, attention_mask, labels, task_ids=None, per_sample=False):
        with model.routed(task_ids):
            logits = model.lm(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask),
                use_cache=False,
            ).logits
        losses = per_sample_lm_loss(logits[response_positions(labels)], labels)
        return losses if per_sample else losses.mean()

    return generative_loss


@dataclass
class Variant:
    """What a variant swaps into the trainer, and its timings."""

    encoder: Any
    optimizer: Any
    per_task_validation: bool
    generative_loss: Any = None  # None: the model's own (logits at response positions only)
    samples_per_s: list[float] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    validation_seconds: list[float] = field(default_factory=list)


def make_variants(trainer: Trainer) -> dict[str, Variant]:
    tcfg = trainer.tcfg
    per_tensor = torch.optim.AdamW(
        trainer.params, lr=tcfg.lr, weight_decay=tcfg.weight_decay, foreach=False, fused=False
    )
    return {
        "before": Variant(
            PerTaskBatches(trainer.train_encoder),
            trainer.accelerator.prepare(per_tensor),
            per_task_validation=True,
            generative_loss=full_logits_generative_loss(trainer.model),
        ),
        "after": Variant(trainer.train_encoder, trainer.optimizer, per_task_validation=False),
    }


def use(trainer: Trainer, variant: Variant) -> None:
    """Swap `variant`'s batching, optimizer and generative loss into the trainer."""
    trainer.train_encoder, trainer.optimizer = variant.encoder, variant.optimizer
    trainer.model.__dict__.pop("generative_loss", None)  # back to the class's method
    if variant.generative_loss is not None:
        trainer.model.generative_loss = variant.generative_loss


def timed_step(trainer: Trainer, variant: Variant, step: int) -> tuple[float, int, int]:
    """(seconds, samples, real tokens) of one training step of `variant`."""
    use(trainer, variant)
    start = time.perf_counter()
    record, _, tokens = trainer._train_step(step)
    seconds = time.perf_counter() - start
    samples = sum(record[f"n/{TASKS[t].code}"] for t in trainer.task_ids)
    return seconds, samples, tokens


def timed_validation(trainer: Trainer, variant: Variant) -> float:
    """Seconds of one S2Sched validation pass, as `variant` runs it."""
    rows, objective = trainer.sched_val_rows, trainer.plain_objective
    encoder, autocast = trainer.val_encoder, trainer.accelerator.autocast
    tasks = [t for t in trainer.task_ids if len(rows[t])]
    use(trainer, variant)
    trainer.model.eval()
    start = time.perf_counter()
    if variant.per_task_validation:
        chunk = trainer.cfg.s2sched.val_batch_size
        for task in tasks:
            validation_losses(objective, encoder, rows, [task], chunk, autocast)
    else:
        validation_losses(objective, encoder, rows, tasks, trainer.tcfg.eval_batch_size, autocast)
    seconds = time.perf_counter() - start
    trainer.model.train()
    return seconds


def run_rounds(trainer: Trainer, variants: dict[str, Variant], pairs: int) -> None:
    """One warm-up round, then `pairs` timed rounds; each round runs both variants on the SAME
    step (sampler and scheduler restored in between: the same rows, the same random passages),
    in alternating order (A B, then B A, …) so neither always runs on a warmer cache."""
    trainer.model.train()
    for step in range(pairs + 1):
        sampler, sched = trainer.sampler.state_dict(), trainer.sched.state_dict()
        order = VARIANTS if step % 2 == 0 else VARIANTS[::-1]
        for name in order:
            trainer.sampler.load_state_dict(sampler)
            trainer.sched.load_state_dict(sched)
            variant = variants[name]
            seconds, samples, tokens = timed_step(trainer, variant, step)
            validation = timed_validation(trainer, variant)
            if step == 0:
                continue
            variant.step_seconds.append(seconds)
            variant.samples_per_s.append(samples / seconds)
            variant.tokens_per_s.append(tokens / seconds)
            variant.validation_seconds.append(validation)


def ratio_summary(ratios: Sequence[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(ratios), 3),
        "min": round(min(ratios), 3),
        "max": round(max(ratios), 3),
        "each": [round(r, 3) for r in ratios],
    }


def summarise(variants: dict[str, Variant], update_interval: int) -> dict[str, Any]:
    before, after = variants["before"], variants["after"]
    per_variant = {
        name: {
            "samples_per_s_median": round(statistics.median(v.samples_per_s), 2),
            "tokens_per_s_median": round(statistics.median(v.tokens_per_s), 1),
            "step_seconds_median": round(statistics.median(v.step_seconds), 3),
            "validation_seconds_median": round(statistics.median(v.validation_seconds), 3),
        }
        for name, v in variants.items()
    }
    step_s = statistics.median(after.step_seconds)
    val_s = statistics.median(after.validation_seconds)
    cost = 100 * val_s / (update_interval * step_s + val_s)
    pairs = list(zip(before.samples_per_s, after.samples_per_s, strict=True))
    validations = list(zip(before.validation_seconds, after.validation_seconds, strict=True))
    return {
        "variants": per_variant,
        "paired_ratios": {
            "samples_per_s_after_over_before": ratio_summary([a / b for b, a in pairs]),
            "validation_speedup_before_over_after": ratio_summary([b / a for b, a in validations]),
        },
        "s2sched_cost_pct": round(cost, 2),
        "target_s2sched_cost_pct": TARGET_S2SCHED_COST_PCT,
        "meets_target": cost <= TARGET_S2SCHED_COST_PCT,
    }


def bench_config(cfg: Config, workdir: Path, steps: int) -> Config:
    """`cfg` with outputs under `workdir` and an LR schedule as long as the benchmark."""
    paths = cfg.paths.model_copy(
        update={
            "checkpoints": workdir / "checkpoints",
            "adapter": workdir / "adapter",
            "train_metrics": workdir / "metrics",
        }
    )
    train = cfg.train.model_copy(update={"steps": steps, "log_samples": False})
    return cfg.model_copy(update={"paths": paths, "train": train})


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
    parser.add_argument("--pairs", type=int, default=6, help="timed rounds (before, after)")
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
        cfg = bench_config(cfg, workdir / "run", steps=args.pairs + 1)
        trainer = build_trainer(cfg)
        variants = make_variants(trainer)
        run_rounds(trainer, variants, args.pairs)
    summary = summarise(variants, cfg.s2sched.update_interval)
    result = {
        "benchmark": "train",
        "mode": "tiny" if args.tiny else "default",
        "machine": machine(
            torch_threads=torch.get_num_threads(),
            cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        ),
        "settings": {
            "base_model": str(cfg.paths.base_model),
            "adapter": cfg.model.adapter,
            "train": cfg.train.model_dump(mode="json", include={
                "embedding_per_batch", "generative_per_batch", "group_size", "grad_accum",
                "grad_cache", "eval_batch_size", "max_len_query", "max_len_passage",
                "max_len_prompt", "max_len_response", "max_padding_share",
            }),
            "s2sched": cfg.s2sched.model_dump(mode="json"),
            "pairs": args.pairs,
            "fused_adamw": bool(variants["after"].optimizer.optimizer.defaults.get("fused")),
        },
        **summary,
    }  # fmt: skip
    write_result(result, args.out, show=summary)


if __name__ == "__main__":
    main()
