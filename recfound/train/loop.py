"""The training loop: accelerate, S2Sched-scheduled multi-task batches, resumable checkpoints.

One *step* is one optimizer update = `train.grad_accum` micro-batches on each of the
`accelerator.num_processes` ranks. The tasks trained are those the dataset has training rows
for (recfound.data.unified.present_tasks): all 13, or any non-empty subset; validation, the
logs and the plots cover exactly those. Per step:

1. every `s2sched.update_interval` steps: per-task validation losses (no grad,
   recfound.train.objective) — the rows of all tasks of a kind in mixed chunks, dealt to the
   ranks, an all-reduce (sum) of the per-task sums gives every rank the same numbers;
2. S2Sched allocates the global slots (per-rank slots × grad_accum × ranks) per task; the
   epoch sampler turns counts into rows (seeded, identical on every rank); the rows are dealt
   to (micro-batch, rank) chunks; the ranks check they agree on the allocation;
3. with `train.grad_cache`: the embeddings of the whole window, cached without a graph, and the
   gradient of the window's InfoNCE w.r.t. them (recfound.train.grad_cache);
4. per micro-batch, forward/backward of L = L_emb + λ·L_gen through the DDP-wrapped objective
   (with the cache: the replayed embeddings' cached gradient instead of their own InfoNCE);
   gradient clipping, AdamW over the adapter's parameters (fused where torch supports it),
   warm-up + cosine LR;
5. metrics (losses reduced over micro-batches and ranks) -> steps.jsonl, progress bar (its
   time left: recfound.train.remaining);
6. every `train.save_every` steps and at the end: a checkpoint (recfound.train.checkpoint).

A fresh run first writes `step-000000` (the initial adapter, which merge's task vectors are
taken against) and the untrained model's validation losses; a re-run resumes from the newest
complete checkpoint of the same configuration.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, gather_object
from transformers import PreTrainedTokenizerBase, get_cosine_schedule_with_warmup

from recfound.config import Config, TrainConfig
from recfound.data.unified import present_tasks
from recfound.model.unified import RecFoundModel, native_bf16
from recfound.outputs import SAMPLES_DIR, STEPS_FILE
from recfound.progress import progress
from recfound.stages import declared_settings
from recfound.tasks import NUM_TASKS, TASKS, Task
from recfound.train import checkpoint as ckpt
from recfound.train.batches import (
    Batch,
    BatchEncoder,
    EpochSampler,
    chunk_index,
    move_to,
    rows_by_task,
    split_step,
    validation_rows,
)
from recfound.train.grad_cache import GradCache
from recfound.train.logq import PassageLogQ
from recfound.train.metrics_log import JsonlLog, write_plot_csvs, write_val_loss
from recfound.train.objective import (
    MultiTaskObjective,
    task_losses,
    validation_chunks,
    validation_sums,
)
from recfound.train.remaining import RemainingTime
from recfound.train.s2sched import POOL_KINDS, S2Sched

# Devices for which torch (≥ 2.4, pinned 2.13) has fused AdamW kernels among those this stage
# runs on; AdamW(fused=True) accepts any device at construction and fails only at step().
FUSED_ADAMW_DEVICES = frozenset({"cpu", "cuda"})


@dataclass
class TrainOutcome:
    """What a finished run reports."""

    steps: int
    resumed_from: int | None
    last_record: dict[str, Any]
    val_loss_before: dict[int, float]
    val_loss_after: dict[int, float]
    train_seconds: float = 0.0  # steps run in this process, S2Sched validation excluded
    schedule_seconds: float = 0.0  # S2Sched validation passes in this process
    tokens: int = 0  # tokens trained on (all ranks) in this process
    outputs: list[Path] = field(default_factory=list)


def resolve_mixed_precision(train_cfg: TrainConfig) -> str:
    """`auto`: bf16 autocast where the device multiplies bf16 natively (a CUDA GPU that supports
    it, a CPU with AMX / AVX512-BF16: `native_bf16`), else none (emulated bf16 is slow)."""
    if train_cfg.mixed_precision != "auto":
        return train_cfg.mixed_precision
    return "bf16" if native_bf16("cuda" if torch.cuda.is_available() else "cpu") else "no"


def trained_kinds(train_cfg: TrainConfig, tasks: Sequence[Task]) -> set[str]:
    """The task kinds a step trains: present in `tasks` and given slots per micro-batch."""
    slots = (train_cfg.embedding_per_batch, train_cfg.generative_per_batch)
    present = {task.kind for task in tasks}
    return {kind.value for kind, n in zip(POOL_KINDS, slots, strict=True) if n and kind in present}


def make_accelerator(train_cfg: TrainConfig, tasks: Sequence[Task] = TASKS) -> Accelerator:
    """The Accelerator for `train`: mixed precision, gradient accumulation, DDP options.

    Under `accelerate launch` / torchrun it joins the process group the launcher set up.
    DDP's find_unused_parameters (an extra graph walk per step) is on only when a task kind
    is not trained, because it has no slots or no task in `tasks` (the task set): its experts
    then get no gradient, which plain DDP treats as an error.
    """
    one_kind_only = len(trained_kinds(train_cfg, tasks)) < len(POOL_KINDS)
    return Accelerator(
        mixed_precision=resolve_mixed_precision(train_cfg),
        gradient_accumulation_steps=train_cfg.grad_accum,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=one_kind_only)],
    )


def make_adamw(params: Sequence[torch.nn.Parameter], train_cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `params`: fused (one kernel over all tensors) when torch has the kernel for
    their device, else torch's default (a loop over the tensors on CPU, for-each on CUDA).

    The default adapter on SmolLM2-135M has 840 tensors (A, B and router of every adapted
    layer, 15 M parameters); on one CPU thread a fused step took 32 ms, the loop 99 ms.
    """
    fused = all(p.device.type in FUSED_ADAMW_DEVICES and p.is_floating_point() for p in params)
    return torch.optim.AdamW(
        params,
        lr=train_cfg.lr,
        weight_decay=train_cfg.weight_decay,
        fused=True if fused else None,
    )


# Train params that say how often and how fast, not what. (eval_batch_size is not among them:
# it chunks S2Sched's validation rows, and a chunk's passages are its queries' in-batch negatives.)
TRAJECTORY_NEUTRAL = ("train.save_every", "train.log_every", "train.log_samples", "train.threads")


def run_fingerprint(cfg: Config, dataset: datasets.DatasetDict, base_model: Path) -> str:
    """Hash of everything that shapes the training trajectory.

    A checkpoint is resumed only under the same fingerprint: the params the train stage declares
    in dvc.yaml (seed, model, train, s2sched: recfound.stages.declared_settings) but the logging
    and saving cadence and the thread count, the unified data and the base model.
    """
    files = sorted(base_model.glob("*.safetensors"))
    payload = {
        **declared_settings(cfg, ["train"], leave_out=TRAJECTORY_NEUTRAL),
        "data": {name: split._fingerprint for name, split in dataset.items()},
        "base_model": {
            "config": (base_model / "config.json").read_text(encoding="utf-8")
            if (base_model / "config.json").is_file()
            else "",
            "weights": [(p.name, p.stat().st_size) for p in files],
        },
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class Trainer:
    """Trains `model`'s adapter on the unified dataset; see the module docstring."""

    def __init__(
        self,
        cfg: Config,
        model: RecFoundModel,
        tokenizer: PreTrainedTokenizerBase,
        dataset: datasets.DatasetDict,
        accelerator: Accelerator,
        fingerprint: str,
    ) -> None:
        if model.adapter is None:
            raise ValueError("Trainer needs a model with an adapter attached")
        self.cfg = cfg
        self.tcfg = cfg.train
        self.model = model
        self.adapter = model.adapter
        self.accelerator = accelerator
        self.fingerprint = fingerprint
        self.world = accelerator.num_processes
        self.rank = accelerator.process_index
        unified = cfg.paths.unified
        self.tasks = present_tasks(dataset)
        self.task_ids = tuple(task.id for task in self.tasks)
        log_q = (
            PassageLogQ.of_split(dataset["train"], self.tcfg.group_size)
            if self.tcfg.logq_correction
            else None
        )
        self.train_encoder = BatchEncoder(
            dataset["train"], tokenizer, self.tcfg, unified / "train", seed=cfg.seed, log_q=log_q
        )
        self.val_encoder = BatchEncoder(
            dataset["validation"], tokenizer, self.tcfg, unified / "validation"
        )
        self.sampler = EpochSampler(rows_by_task(dataset["train"], self.task_ids), cfg.seed)
        self.slots = (self.tcfg.embedding_per_batch, self.tcfg.generative_per_batch)
        self.chunks = self.tcfg.grad_accum * self.world
        self.sched = S2Sched(
            cfg.s2sched,
            self.sampler.sizes(),
            self.slots[0] * self.chunks,
            self.slots[1] * self.chunks,
        )
        self.sched_val_rows = validation_rows(
            dataset["validation"], cfg.s2sched.val_batch_size, cfg.seed, self.task_ids
        )
        # The before/after validation losses: at most val_rows_per_task seeded rows per task
        # (a user's validation split may hold one row per user).
        self.full_val_rows = validation_rows(
            dataset["validation"], self.tcfg.val_rows_per_task, cfg.seed, self.task_ids
        )
        self.params = self.adapter.trainable_parameters()
        if accelerator.mixed_precision != "no":
            # Master weights in fp32: autocast computes in bf16/fp16, while AdamW updates of
            # ~lr·1e-3 would vanish in a 16-bit weight.
            for param in self.params:
                param.data = param.data.float()
        # The plain objective: validation and the GradCache pass run it without DDP.
        self.plain_objective = MultiTaskObjective.from_config(model, cfg)
        optimizer = make_adamw(self.params, self.tcfg)
        # Not prepared: accelerate would step it once per process per optimizer step.
        self.scheduler = get_cosine_schedule_with_warmup(
            optimizer, self.tcfg.warmup_steps, self.tcfg.steps
        )
        self.objective, self.optimizer = accelerator.prepare(self.plain_objective, optimizer)
        # A window of one micro-batch is what the plain path computes already.
        self.grad_cache = (
            GradCache(self.plain_objective, accelerator.autocast, self.tcfg.grad_accum)
            if self.tcfg.grad_cache and self.tcfg.grad_accum > 1
            else None
        )

    # ------------------------------------------------------------------------ shared helpers
    def _shared_validation(self, rows: Mapping[int, Sequence[int]], desc: str) -> dict[int, float]:
        """Per-task validation losses, identical on every rank, of the tasks of the task set
        that have rows in `rows` (a task without validation rows has no loss to report).

        The rows run in mixed chunks of `train.eval_batch_size` (recfound.train.objective);
        rank r takes the chunks at positions ≡ r (mod world), an all-reduce sums the per-task
        sums and weights, and each task's loss is their ratio."""
        measured = [t for t in self.task_ids if len(rows[t])]
        chunks = validation_chunks(rows, measured, self.tcfg.eval_batch_size)
        was_training = self.model.training
        self.model.eval()  # no dropout in a measurement
        mine = progress(
            chunks[self.rank :: self.world],
            desc=desc,
            unit="batch",
            leave=None,
            disable=not self.accelerator.is_local_main_process,
        )
        sums = validation_sums(
            self.plain_objective, self.val_encoder, mine, self.accelerator.autocast
        )
        self.model.train(was_training)
        # Indexed by task id (the model's id space), so every rank reduces the same shape.
        sums = self.accelerator.reduce(torch.stack(sums), reduction="sum")
        return task_losses(sums[0], sums[1], measured)

    def _check_same_allocation(self, counts: Mapping[int, int]) -> None:
        """Every rank must take the same scheduling decision; fail loudly if not."""
        if self.world == 1:
            return
        local = torch.tensor([counts[t] for t in self.task_ids], device=self.accelerator.device)
        everyone = self.accelerator.gather(local).view(self.world, len(self.task_ids))
        if not bool((everyone == everyone[0]).all()):
            raise RuntimeError(f"ranks disagree on the S2Sched allocation: {everyone.tolist()}")

    def _save(self, step: int, extra: Mapping[str, Any]) -> None:
        """Checkpoint `step` (main process writes; every rank contributes its RNG state)."""
        rng = gather_object([ckpt.capture_rng()]) if self.world > 1 else [ckpt.capture_rng()]
        if self.accelerator.is_main_process:
            state = {
                "fingerprint": self.fingerprint,
                "s2sched": self.sched.state_dict(),
                "sampler": self.sampler.state_dict(),
                **extra,
            }
            ckpt.save_checkpoint(
                self.cfg.paths.checkpoints,
                step,
                self.adapter,
                self.optimizer,
                self.scheduler,
                state,
                rng,
            )
        self.accelerator.wait_for_everyone()

    def _resume_or_start(self, report_val_loss: bool) -> tuple[int, dict[int, float], int | None]:
        """(first step to run, untrained validation losses, step resumed from or None).

        The untrained losses are measured on a fresh start when `report_val_loss`, else {}.
        """
        root = self.cfg.paths.checkpoints
        acc = self.accelerator
        if acc.is_main_process:
            note = ckpt.prepare_root(root, self.fingerprint)
            if note:
                acc.print(note)
        acc.wait_for_everyone()
        latest = ckpt.latest_checkpoint(root)
        if latest is None:
            before = (
                self._shared_validation(self.full_val_rows, "validation loss before training")
                if report_val_loss
                else {}
            )
            self._save(0, _before_state(before))
            if acc.is_main_process:
                # Step 0 is on disk: the other configuration's checkpoints are superseded.
                ckpt.drop_previous(root)
            return 0, before, None
        step, path = latest
        state = ckpt.load_checkpoint(path, self.adapter, self.optimizer, self.scheduler, self.rank)
        self.sched.load_state_dict(state["s2sched"])
        self.sampler.load_state_dict(state["sampler"])
        before = {int(t): float(v) for t, v in state["val_loss_before"].items()}
        acc.print(f"resuming from {path}")
        return step, before, step

    # -------------------------------------------------------------------------------- steps
    def _micro_batches(
        self, step: int, counts: Mapping[int, int]
    ) -> tuple[list[Batch], list[str], int]:
        """This rank's micro-batches of the step (on the device), their row ids (with
        `train.log_samples`) and their real tokens."""
        chunks = split_step(self.sampler.draw(counts), self.slots, self.chunks)
        mine = [chunks[chunk_index(m, self.rank, self.world)] for m in range(self.tcfg.grad_accum)]
        # Each step draws its rows' positives and hard negatives afresh (keyed by the step).
        batches = [self.train_encoder.micro_batch(emb, gen, draw=step) for emb, gen in mine]
        tokens = sum(_count_tokens(batch) for batch in batches)
        rows = [row for emb, gen in mine for row in (*emb, *gen)]
        row_ids = self.train_encoder.row_ids(rows) if self.tcfg.log_samples else []
        return move_to(batches, self.accelerator.device), row_ids, tokens

    def _train_step(self, step: int) -> tuple[dict[str, Any], list[str], int]:
        """One optimizer step; returns (metrics record, this rank's row ids, global tokens)."""
        acc, tcfg = self.accelerator, self.tcfg
        weights = self.sched.weights(step)
        counts = self.sched.allocate(step, self.sampler.unseen())
        self._check_same_allocation(counts)
        batches, row_ids, tokens = self._micro_batches(step, counts)
        # GradCache: InfoNCE over the whole window and its gradient w.r.t. every embedding.
        cached = (
            self.grad_cache.cache_window([batch["embedding"] for batch in batches])
            if self.grad_cache
            else [None] * len(batches)
        )
        sums = torch.zeros(4, dtype=torch.float64, device=acc.device)  # loss, emb, gen, tokens
        sums[3] = tokens
        task_sum = torch.zeros(NUM_TASKS, dtype=torch.float64, device=acc.device)
        task_weight = torch.zeros_like(task_sum)
        for batch, window_share in zip(batches, cached, strict=True):
            with acc.accumulate(self.objective):
                out = self.objective(**batch, cached=window_share)
                acc.backward(out["backward"])
                if acc.sync_gradients and tcfg.max_grad_norm > 0:
                    acc.clip_grad_norm_(self.params, tcfg.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
            sums[:3] += torch.stack([out["loss"], out["loss_emb"], out["loss_gen"]])
            task_sum += out["task_loss_sum"]
            task_weight += out["task_weight"]
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        sums[:3] /= tcfg.grad_accum
        sums = acc.reduce(sums, reduction="sum")
        task_sum = acc.reduce(task_sum, reduction="sum")
        task_weight = acc.reduce(task_weight, reduction="sum")
        record: dict[str, Any] = {
            "step": step + 1,
            "loss": float(sums[0]) / self.world,
            "loss_emb": float(sums[1]) / self.world,
            "loss_gen": float(sums[2]) / self.world,
            "lr": lr,
        }
        for task in self.tasks:
            if task_weight[task.id] > 0:
                record[f"loss/{task.code}"] = float(task_sum[task.id] / task_weight[task.id])
        for task in self.tasks:
            record[f"ratio/{task.code}"] = weights[task.id]
            record[f"n/{task.code}"] = counts[task.id]
        record["tokens"] = int(sums[3])
        return record, row_ids, int(sums[3])

    def run(self, report_val_loss: bool = True) -> TrainOutcome:
        """Train from scratch or the newest checkpoint to `train.steps`; write the outputs.

        `report_val_loss=False` skips the untrained/trained validation losses and
        val_loss.json.
        """
        acc, tcfg, paths = self.accelerator, self.tcfg, self.cfg.paths
        start, before, resumed_from = self._resume_or_start(report_val_loss)
        metrics = JsonlLog(paths.train_metrics / STEPS_FILE)
        samples = JsonlLog(paths.train_metrics / SAMPLES_DIR / f"rank-{self.rank}.jsonl")
        if acc.is_main_process:
            metrics.resume(start)
        if tcfg.log_samples:
            samples.resume(start)
        outcome = TrainOutcome(tcfg.steps, resumed_from, {}, before, {})
        passes = (step for step in range(start, tcfg.steps) if self.sched.is_update_step(step))
        eta = RemainingTime(tcfg.steps, passes)
        bar = progress(
            total=tcfg.steps,
            initial=start,
            desc="train",
            unit="step",
            disable=not acc.is_local_main_process,
        )
        self.model.train()
        for step in range(start, tcfg.steps):
            val_record: dict[str, float] = {}
            if self.sched.is_update_step(step):
                t0 = time.perf_counter()
                val = self._shared_validation(self.sched_val_rows, "S2Sched validation")
                self.sched.update(step, val)
                pass_seconds = time.perf_counter() - t0
                outcome.schedule_seconds += pass_seconds
                eta.add_validation(pass_seconds)
                val_record = {f"val_loss/{TASKS[t].code}": v for t, v in val.items()}
            t0 = time.perf_counter()
            record, row_ids, tokens = self._train_step(step)
            outcome.train_seconds += time.perf_counter() - t0
            outcome.tokens += tokens
            record.update(val_record)
            outcome.last_record = record
            if acc.is_main_process and record["step"] % tcfg.log_every == 0:
                metrics.append(record)
            if tcfg.log_samples:
                counts = {t.code: record[f"n/{t.code}"] for t in self.tasks}
                samples.append({"step": record["step"], "counts": counts, "ids": row_ids})
            if record["step"] % tcfg.save_every == 0 or record["step"] == tcfg.steps:
                self._save(record["step"], _before_state(before))
            eta.add_step(time.perf_counter() - t0)  # saving and logging included
            bar.set_remaining(eta.seconds(step + 1))
            bar.set_postfix(_postfix(record, self.tasks), refresh=False)
            bar.update(1)
        bar.close()
        self.model.eval()
        if not outcome.last_record and acc.is_main_process:
            outcome.last_record = next(reversed(metrics.records()), {})  # a finished run re-run
        if report_val_loss and before:
            outcome.val_loss_after = self._shared_validation(
                self.full_val_rows, "validation loss after training"
            )
        if acc.is_main_process:
            self.adapter.save(paths.adapter)
            outcome.outputs.append(paths.adapter)
            outcome.outputs += write_plot_csvs(metrics.records(), paths.train_metrics)
            if outcome.val_loss_after:
                outcome.outputs.append(
                    write_val_loss(before, outcome.val_loss_after, paths.train_metrics)
                )
            outcome.outputs += [paths.train_metrics / STEPS_FILE, paths.checkpoints]
        acc.wait_for_everyone()
        return outcome


def _before_state(before: Mapping[int, float]) -> dict[str, Any]:
    """The untrained model's validation losses, carried in every checkpoint for val_loss.json."""
    return {"val_loss_before": {str(t): v for t, v in before.items()}}


def _count_tokens(batch: Mapping[str, Any]) -> int:
    """Real (non-padding) tokens of a micro-batch: queries, passages and generative rows."""
    total = 0
    if batch["embedding"] is not None:
        total += int(batch["embedding"]["queries"]["attention_mask"].sum())
        total += int(batch["embedding"]["passages"]["attention_mask"].sum())
    total += sum(int(b["attention_mask"].sum()) for b in batch["generative"])
    return total


def _postfix(record: Mapping[str, Any], tasks: Sequence[Task]) -> dict[str, str]:
    """Progress-bar fields: the loss and this step's samples per task, per kind present."""
    fields = {"loss": f"{record['loss']:.3f}"}
    for kind in POOL_KINDS:
        counts = [f"{t.code}:{record[f'n/{t.code}']}" for t in tasks if t.kind is kind]
        if counts:
            fields[kind.value[:3]] = " ".join(counts)  # "emb" / "gen"
    return fields
