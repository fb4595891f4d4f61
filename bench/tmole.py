"""Benchmark: what TMoLE costs to train and what its per-task merge costs at inference.

    python -m bench.tmole [--model DIR | --tiny] [--batch 4 --seq-len 128 --warmup 2 --repeats 5]

Writes bench/results/tmole.json. Training steps run on one fixed batch of random token ids
(labels = inputs), `--warmup` rounds then `--repeats` timed rounds; each round runs one step of
every variant, in an order rotated per round, so load from other processes on a shared machine
falls on all variants alike. Reported: median and best wall time per step.

- `base_frozen`: the frozen base with nothing trainable. Forward + backward down to the input
  embeddings (a leaf tensor that requires grad), i.e. all the activation gradients any adapter
  needs but no weight gradients and no optimizer step: the floor every adapter sits on.
- `tmole`: TMoLE as configured in params.yaml (`model.tmole`, 6 experts of rank 8 by default),
  a mixed-task batch; forward + backward + AdamW step over experts, routers and task table.
- `lora_r8`, `lora_r48`: PEFT LoRA of rank 8 and of rank E·r = 48 (same adapter width as TMoLE).
- `tmole_looped`: the same TMoLE computed one expert at a time (2E small matmuls per layer, as
  the paper's reference code); its logits are checked against `tmole` before timing.

Generation: greedy decoding of `--new-tokens` tokens (EOS ignored) from one prompt, tokens/s of
the base model, of the base with one task merged in (recfound.model.export), of the routed,
unmerged TMoLE model, and of the same with its gates recomputed at every forward
(`tmole_gates_every_step`: as before the per-block gate cache of recfound.model.tmole); runs
alternate between models so machine load hits them alike.

Ratios (`ratios` from medians, `ratios_from_best` from best times): tmole / lora_r48 step
time (target ≤ 1.10), tmole_looped / tmole (> 1: stacking is faster), merged / base tokens/s
(target ≥ 0.97), routed / gates-every-step tokens/s (> 1: the gate cache pays).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm
from transformers import AutoModelForCausalLM, PreTrainedModel

from recfound.atomic import atomic_file
from recfound.config import Config, ModelConfig, load_config
from recfound.model.adapters import Adapter, TMoLEAdapter, attach_adapter
from recfound.model.export import merge_task_into_base
from recfound.model.tmole import TaskRouting, TMoLELinear
from recfound.model.unified import resolve_dtype
from recfound.tasks import NUM_TASKS

RESULTS = Path("bench/results/tmole.json")
TARGET_TMOLE_OVER_LORA_R48 = 1.10
TARGET_MERGED_OVER_BASE = 0.97
STATS = ("median", "best")
# Looped and stacked TMoLE sum the same terms in another order: their logits agree up to this
# fraction of the largest logit (float rounding through all layers).
LOOPED_RELATIVE_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}


# ------------------------------------------------------------------ the looped reference form


class LoopedTMoLELinear(nn.Module):
    """TMoLE as the reference code computes it: one (A_e, B_e) pair of nn.Linear per expert.

    y = W x + Σ_e g_e(t)(α/r) B_e(A_e(x)), a Python loop over E experts. Built from a
    TMoLELinear, whose router, routing and weights it reuses / copies, so outputs agree.
    """

    def __init__(self, stacked: TMoLELinear) -> None:
        super().__init__()
        self.base, self.router, self.rank = stacked.base, stacked.router, stacked.rank
        self.scaling = stacked.scaling
        self._routing = (stacked.routing,)
        weight = stacked.lora_a
        like = {"bias": False, "dtype": weight.dtype, "device": weight.device}
        self.expert_a = nn.ModuleList(
            nn.Linear(stacked.base.in_features, self.rank, **like)
            for _ in range(stacked.num_experts)
        )
        self.expert_b = nn.ModuleList(
            nn.Linear(self.rank, stacked.base.out_features, **like)
            for _ in range(stacked.num_experts)
        )
        with torch.no_grad():
            for e, (a, b) in enumerate(zip(self.expert_a, self.expert_b, strict=True)):
                a.weight.copy_(stacked.lora_a[e * self.rank : (e + 1) * self.rank])
                b.weight.copy_(stacked.lora_b[:, e * self.rank : (e + 1) * self.rank])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        routing: TaskRouting = self._routing[0]
        task_ids = routing.current_task_ids(x.shape[0])
        logits = self.router(routing.task_embedding[task_ids])
        gates = (logits + routing.expert_logit_mask[task_ids]).softmax(dim=-1)
        out = self.base(x)
        for e, (a, b) in enumerate(zip(self.expert_a, self.expert_b, strict=True)):
            gate = gates[:, e].view(x.shape[0], *([1] * (x.dim() - 1)))
            out = out + gate * self.scaling * b(a(x))
        return out


def loop_the_experts(model: nn.Module, adapter: TMoLEAdapter) -> list[nn.Parameter]:
    """Replace each TMoLELinear by its looped twin; returns the new trainable parameters."""
    params: list[nn.Parameter] = [adapter.routing.task_embedding]
    for name, layer in adapter.layers.items():
        looped = LoopedTMoLELinear(layer)
        model.set_submodule(name, looped)
        params += [*looped.expert_a.parameters(), *looped.expert_b.parameters()]
        params += list(looped.router.parameters())
    return params


# -------------------------------------------------------------------------------- measuring


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    runs: dict[str, Callable[[], None]], warmup: int, repeats: int, device: torch.device, desc: str
) -> dict[str, list[float]]:
    """Wall times of each run over `repeats` rounds after `warmup` rounds.

    Each round calls every run once, in an order rotated per round, so that load from other
    processes on a shared machine falls on all of them alike rather than on whichever ran last.
    """
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in tqdm(range(warmup + repeats), desc=desc, unit="round", leave=False):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            synchronize(device)
            started = time.perf_counter()
            runs[name]()
            synchronize(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - started)
    return times


def summary(
    values: list[float], best: Callable[[list[float]], float] = min
) -> dict[str, float | list[float]]:
    """Median, best (min for times, max for rates) and all values."""
    return {
        "median": statistics.median(values),
        "best": best(values),
        "all": [round(v, 4) for v in values],
    }


def adapter_training_step(
    model: nn.Module,
    adapter: Adapter,
    params: list[nn.Parameter],
    tokens: torch.Tensor,
    task_ids: torch.Tensor,
) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(params, lr=1e-4)  # the value does not change the cost

    def step() -> None:
        with adapter.route(task_ids):
            model(input_ids=tokens, labels=tokens).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def frozen_base_step(model: PreTrainedModel, tokens: torch.Tensor) -> Callable[[], None]:
    embed = model.get_input_embeddings()

    def step() -> None:
        inputs = embed(tokens).detach().requires_grad_(True)
        model(inputs_embeds=inputs, labels=tokens).loss.backward()

    return step


def trained_looking(adapter: Adapter, seed: int) -> None:
    """Random values in every adapter tensor (B is zero at init), as after some training."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in adapter.trainable_parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.02)


def greedy_generation(
    model: nn.Module, prompt: torch.Tensor, new_tokens: int, route: Callable
) -> Callable[[], None]:
    """Greedy decoding of exactly `new_tokens` tokens (EOS ignored via min_new_tokens)."""

    def run() -> None:
        with torch.no_grad(), route():
            out = model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
            )
        if out.shape[1] - prompt.shape[1] != new_tokens:
            raise RuntimeError(
                f"generated {out.shape[1] - prompt.shape[1]} tokens, not {new_tokens}"
            )

    return run


@contextlib.contextmanager
def gates_every_step(adapter: TMoLEAdapter, task: torch.Tensor):
    """Route `task`, with each layer's gates recomputed at every forward (no per-block cache)."""
    cached = TMoLELinear.routed_scales
    TMoLELinear.routed_scales = TMoLELinear.rank_block_scales
    try:
        with adapter.route(task):
            yield
    finally:
        TMoLELinear.routed_scales = cached


def speed_ratios(
    steps: dict[str, dict], tokens_per_s: dict[str, dict], stat: str, stacked_rank: int
) -> dict[str, float | dict[str, bool]]:
    """The headline ratios from one statistic (`median` or `best`) of the timings."""
    step = {label: stats[stat] for label, stats in steps.items()}
    rate = {name: stats[stat] for name, stats in tokens_per_s.items()}
    wide_lora = f"lora_r{stacked_rank}"
    ratios: dict[str, float | dict[str, bool]] = {
        f"tmole_over_{wide_lora}": step["tmole"] / step[wide_lora],
        "tmole_over_lora_r8": step["tmole"] / step["lora_r8"],
        "tmole_over_base_frozen": step["tmole"] / step["base_frozen"],
        "looped_over_tmole": step["tmole_looped"] / step["tmole"],
        "merged_over_base_tokens_per_s": rate["merged_task"] / rate["base"],
        "routed_over_base_tokens_per_s": rate["tmole_routed"] / rate["base"],
        "gate_cache_tokens_per_s": rate["tmole_routed"] / rate["tmole_gates_every_step"],
    }
    ratios["targets_met"] = {
        f"tmole_over_{wide_lora}_at_most_{TARGET_TMOLE_OVER_LORA_R48}": ratios[
            f"tmole_over_{wide_lora}"
        ]
        <= TARGET_TMOLE_OVER_LORA_R48,
        "stacked_faster_than_looped": ratios["looped_over_tmole"] > 1.0,
        f"merged_over_base_at_least_{TARGET_MERGED_OVER_BASE}": ratios[
            "merged_over_base_tokens_per_s"
        ]
        >= TARGET_MERGED_OVER_BASE,
    }
    return ratios


# ------------------------------------------------------------------------------------ main


def resolve_model_dir(args: argparse.Namespace, cfg: Config, scratch: Path) -> Path:
    """--tiny: a tiny random Llama; --model: that dir; else the base_model stage's output."""
    if args.tiny:
        from recfound.model.tiny import build_tiny_llama

        return build_tiny_llama(scratch / "tiny-llama")
    if args.model is not None:
        return args.model
    if not (cfg.paths.base_model / "config.json").is_file():
        from recfound.model import base_model

        print(f"{cfg.paths.base_model} missing: running the base_model stage first")
        base_model.run(cfg)
    return cfg.paths.base_model


def time_training_steps(
    load_model: Callable[[], PreTrainedModel],
    variants: dict[str, ModelConfig],
    tokens: torch.Tensor,
    task_ids: torch.Tensor,
    args: argparse.Namespace,
) -> tuple[dict[str, dict], dict[str, int], dict[str, float | bool]]:
    """Step-time summaries, trainable-parameter counts, and how close looped and stacked are.

    Every variant gets its own model loaded from disk: a deep copy measured slower than a
    freshly loaded model here (memory layout), which would bias the comparison.
    """
    runs: dict[str, Callable[[], None]] = {
        "base_frozen": frozen_base_step(load_model().train(), tokens)
    }
    trainable: dict[str, int] = {"base_frozen": 0}
    looped_matches: dict[str, float | bool] = {}
    for label, model_cfg in variants.items():
        model = load_model()
        adapter = attach_adapter(model, model_cfg)
        trained_looking(adapter, args.seed)
        params = adapter.trainable_parameters()
        if label == "tmole_looped":
            with torch.no_grad(), adapter.route(task_ids):
                stacked_logits = model(tokens).logits
                params = loop_the_experts(model, adapter)
                looped_logits = model(tokens).logits
            # Same sums in another order: equal up to float rounding, relative to the logit scale.
            looped_diff = (looped_logits - stacked_logits).abs().max().item()
            tolerance = LOOPED_RELATIVE_TOLERANCE[model.dtype] * stacked_logits.abs().max().item()
            looped_matches = {
                "max_abs_diff": looped_diff,
                "tolerance": tolerance,
                "match": looped_diff <= tolerance,
            }
            del stacked_logits, looped_logits
        model.train()
        runs[label] = adapter_training_step(model, adapter, params, tokens, task_ids)
        trainable[label] = sum(p.numel() for p in params)
    step_times = interleaved_times(runs, args.warmup, args.repeats, tokens.device, "train steps")
    steps = {label: summary(times) for label, times in step_times.items()}
    for label, stats in steps.items():
        print(f"  {label:14s} {stats['median']:.3f} s/step (median)")
    return steps, trainable, looped_matches


def time_generation(
    load_model: Callable[[], PreTrainedModel],
    tmole_cfg: ModelConfig,
    prompt: torch.Tensor,
    args: argparse.Namespace,
) -> dict[str, dict]:
    """Tokens/s summaries of greedy decoding: base, task-merged, routed TMoLE.

    The merged model is made as it would be deployed: a freshly loaded base, the adapter
    attached and loaded, then merged in place; so base and merged differ only in weight values.
    """
    base = load_model().eval()
    routed_model = load_model().eval()
    routed_adapter = attach_adapter(routed_model, tmole_cfg)
    trained_looking(routed_adapter, args.seed)
    merged_model = load_model().eval()
    merged_adapter = attach_adapter(merged_model, tmole_cfg)
    merged_adapter.load_adapter_state_dict(routed_adapter.adapter_state_dict())
    merge_task_into_base(merged_model, merged_adapter, args.merge_task, inplace=True)
    task = torch.tensor([args.merge_task], device=prompt.device)
    generations = {
        "base": greedy_generation(base, prompt, args.new_tokens, contextlib.nullcontext),
        "merged_task": greedy_generation(
            merged_model, prompt, args.new_tokens, contextlib.nullcontext
        ),
        "tmole_routed": greedy_generation(
            routed_model, prompt, args.new_tokens, lambda: routed_adapter.route(task)
        ),
        "tmole_gates_every_step": greedy_generation(
            routed_model, prompt, args.new_tokens, lambda: gates_every_step(routed_adapter, task)
        ),
    }
    times = interleaved_times(generations, args.warmup, args.gen_repeats, prompt.device, "generate")
    tokens_per_s = {
        name: summary([args.new_tokens / t for t in ts], best=max) for name, ts in times.items()
    }
    for name, stats in tokens_per_s.items():
        print(f"  {name:14s} {stats['median']:.1f} tokens/s (median)")
    return tokens_per_s


def run_bench(args: argparse.Namespace) -> dict:
    """Resolve the model, run both measurements, return the JSON-ready results."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = load_config(args.params)
    with tempfile.TemporaryDirectory() as scratch:
        return measure(args, cfg, resolve_model_dir(args, cfg, Path(scratch)))


def measure(args: argparse.Namespace, cfg: Config, model_dir: Path) -> dict:
    device = torch.device(args.device)
    dtype = resolve_dtype(cfg.model, device)

    def load_model() -> PreTrainedModel:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
        return model.requires_grad_(False)

    probe = load_model()
    vocab = probe.get_input_embeddings().num_embeddings
    n_parameters = sum(p.numel() for p in probe.parameters())
    del probe
    gen = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(vocab, (args.batch, args.seq_len), generator=gen).to(device)
    # A mixed batch, embedding and generative tasks alike, as in training.
    task_ids = (torch.arange(args.batch, device=device) * 5) % NUM_TASKS

    tmole_cfg: ModelConfig = cfg.model.model_copy(update={"adapter": "tmole"})
    stacked_rank = tmole_cfg.tmole.rank * (
        tmole_cfg.tmole.experts_embedding
        + tmole_cfg.tmole.experts_shared
        + tmole_cfg.tmole.experts_generative
    )

    def lora_cfg(rank: int) -> ModelConfig:
        lora = cfg.model.lora.model_copy(update={"rank": rank})
        return cfg.model.model_copy(update={"adapter": "lora", "lora": lora})

    variants = {
        "tmole": tmole_cfg,
        "tmole_looped": tmole_cfg,
        "lora_r8": lora_cfg(cfg.model.lora.rank),
        f"lora_r{stacked_rank}": lora_cfg(stacked_rank),
    }
    print(f"training step: batch {args.batch}×{args.seq_len} on {device} ({dtype})")
    steps, trainable, looped_matches = time_training_steps(
        load_model, variants, tokens, task_ids, args
    )
    print(f"generation: {args.new_tokens} new tokens, greedy, batch 1")
    tokens_per_s = time_generation(load_model, tmole_cfg, tokens[:1, : args.prompt_len], args)
    ratios = {stat: speed_ratios(steps, tokens_per_s, stat, stacked_rank) for stat in STATS}
    return {
        "model": str(model_dir),
        "tiny": args.tiny,
        "parameters": n_parameters,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "tmole": tmole_cfg.tmole.model_dump(),
        "target_modules": list(cfg.model.target_modules),
        "train_step": {
            "batch": args.batch,
            "seq_len": args.seq_len,
            "task_ids": task_ids.tolist(),
            "warmup": args.warmup,
            "repeats": args.repeats,
            "seconds_per_step": steps,
            "trainable_parameters": trainable,
            "looped_vs_stacked_logits": looped_matches,
        },
        "generation": {
            "prompt_len": min(args.prompt_len, args.seq_len),
            "new_tokens": args.new_tokens,
            "merged_task_id": args.merge_task,
            "repeats": args.gen_repeats,
            "tokens_per_s": tokens_per_s,
        },
        "ratios": ratios["median"],
        "ratios_from_best": ratios["best"],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tmole", description=__doc__.split("\n")[0]
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path, help="a HF model dir (default: paths.base_model)")
    source.add_argument("--tiny", action="store_true", help="smoke run on a tiny random Llama")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch CPU threads"
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--gen-repeats", type=int, default=5)
    parser.add_argument("--merge-task", type=int, default=4, help="task merged for generation")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run_bench(args)
    with atomic_file(args.out) as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    print(json.dumps(result["ratios"], indent=2))
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
