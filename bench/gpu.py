"""The GPU check: a TMoLE training step at the Mistral-7B shape against PEFT LoRA, in one run.

    python -m bench.gpu            # on a GPU machine: the 7B shape, ≤ 8 minutes on one H100
    python -m bench.gpu --smoke    # the same code at tiny shapes on CPU (in `make test`)

Writes gpu.json into $OUT when that is set (the device tool's output folder), else
bench/results/ (gpu-smoke.json for --smoke). Nothing is downloaded: the model is a randomly
initialised MistralForCausalLM of the shape (7B: 32 layers, hidden 4096, MLP 14336, 32 heads,
8 KV heads, vocab 32768), its weights in bf16.

(a) Steps. One training step — forward, backward, AdamW over the adapter — of TMoLE as the
    authors configure it (`model.preset: authors`: experts of rank 16 on q/k/v/o, this project's
    2 + 2 + 2 experts) and of a PEFT LoRA of equal total rank (E·r = 96, `lora.equal_capacity`),
    on random tokens of a mixed-task generative batch, for each sequence length with and
    without gradient checkpointing (ours: `RecFoundModel.enable_gradient_checkpointing`), at the
    largest power-of-two batch that fits (`--max-batch` at most). Reported: tokens/s (median of
    `--repeats` interleaved steps), peak memory (CUDA only), and MFU = F / (t · R), with R the
    bf16 matmul rate measured here (an n³ product; the H100's datasheet 989 TFLOP/s is quoted
    beside it) and the model FLOPs of a step over T tokens of length s

        F = T · (4·P + 6·A + 12·L·s·d)

    P the frozen base's matmul weights (forward 2P; backward 2P for the activation gradients,
    none for the frozen weights), A the adapter's weights (forward, activation and weight
    gradients: 6A), and attention's QKᵀ and AV products (4·L·s·d forward, twice that backward,
    full rather than causal, as PaLM counts). Recomputation under checkpointing is not counted.
    Each configuration is timed on its own (a GPU machine runs nothing else); the smoke run's
    figures on a shared CPU only show that the code runs.
(c) Precision. The loss of one batch in fp32 and under bf16 autocast, same weights, small shape.

Not in this bench yet: (b) measured peak against `recfound plan`, (d) a killed and resumed
training run on CUDA (resume is bit-exact on CPU: tests/test_train_loop.py).

Runs on the GPU machine with torch, transformers, peft and accelerate as found there, plus this
project's pydantic config (carry its wheels, docs/training.md "Paper scale").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from torch import nn

from bench.tmole import interleaved_times, synchronize, trained_looking
from recfound.config import ModelConfig
from recfound.model.adapters import attach_adapter
from recfound.model.unified import RecFoundModel
from recfound.tasks import GENERATIVE_TASK_IDS

H100_DATASHEET_BF16_TFLOPS = 989.0  # dense bf16, SXM


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    mlp: int
    heads: int
    kv_heads: int
    vocab: int
    seq_lens: tuple[int, ...]
    matmul_n: int  # side of the square product that measures the matmul rate


MISTRAL_7B = Shape(32, 4096, 14336, 32, 8, 32768, (1024, 2048), 8192)
SMOKE = Shape(2, 64, 128, 4, 2, 256, (16, 32), 256)


def build_model(shape: Shape, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A randomly initialised MistralForCausalLM of `shape`, built directly in `dtype`."""
    config = transformers.MistralConfig(
        num_hidden_layers=shape.layers,
        hidden_size=shape.hidden,
        intermediate_size=shape.mlp,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        vocab_size=shape.vocab,
        max_position_embeddings=max(shape.seq_lens),
        attn_implementation="sdpa",
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return transformers.MistralForCausalLM(config)
    finally:
        torch.set_default_dtype(default)


def frozen_matmul_weights(model: nn.Module) -> int:
    """P: the weights of the base's linear layers (lm_head included, embeddings not); an
    adapter's own linear layers (TMoLE's routers, PEFT's A and B) are trainable, so left out."""
    return sum(
        m.weight.numel()
        for m in model.modules()
        if type(m) is nn.Linear and not m.weight.requires_grad
    )


def step_flops(tokens: int, seq_len: int, base: int, adapter: int, shape: Shape) -> float:
    """F = T·(4P + 6A + 12·L·s·d) (module docstring)."""
    return tokens * (4 * base + 6 * adapter + 12 * shape.layers * seq_len * shape.hidden)


def measured_matmul_tflops(n: int, device: torch.device, dtype: torch.dtype) -> float:
    """R: the rate of an n×n by n×n product in `dtype` (best of 5 after a warm-up)."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    times = []
    for _ in range(6):
        synchronize(device)
        started = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - started)
    return 2 * n**3 / min(times[1:]) / 1e12


def with_adapter(model: nn.Module, kind: str, checkpointing: bool) -> RecFoundModel:
    """`model` with a fresh adapter (the authors' TMoLE, or the equal-rank LoRA), in training
    mode, its tensors random (B starts at 0) so every adapter weight gets a gradient."""
    cfg = ModelConfig(preset="authors", adapter=kind, lora={"equal_capacity": True})
    wrapped = RecFoundModel(model, attach_adapter(model, cfg))
    for param in wrapped.adapter.trainable_parameters():
        param.data = param.data.float()  # fp32 master weights, as the trainer keeps them
    trained_looking(wrapped.adapter, seed=0)
    if checkpointing:
        wrapped.enable_gradient_checkpointing()
    return wrapped.train()


def training_step(model: RecFoundModel, tokens: torch.Tensor) -> Callable[[], None]:
    """Forward, backward and an AdamW step of the adapter, under bf16 autocast, tasks mixed."""
    params = model.adapter.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=tokens.device.type == "cuda")
    tasks = torch.tensor(GENERATIVE_TASK_IDS, device=tokens.device)
    task_ids = tasks[torch.arange(len(tokens), device=tokens.device) % len(tasks)]

    def step() -> None:
        with model.routed(task_ids), torch.autocast(tokens.device.type, torch.bfloat16):
            loss = model.lm(input_ids=tokens, labels=tokens, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def largest_batch(step_for: Callable[[int], Callable[[], None]], most: int) -> int:
    """The largest power-of-two batch ≤ `most` whose step runs (CUDA out-of-memory ends it)."""
    fits = 0
    batch = 1
    while batch <= most:
        try:
            step_for(batch)()
        except torch.OutOfMemoryError:
            break
        fits, batch = batch, batch * 2
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if not fits:
        raise RuntimeError("not even a batch of 1 fits")
    return fits


def measure_steps(args: argparse.Namespace, shape: Shape, device: torch.device) -> dict:
    """(a): tokens/s, peak memory and MFU per (sequence length, checkpointing, adapter)."""
    rate = measured_matmul_tflops(shape.matmul_n, device, torch.bfloat16)
    rows = []
    for seq_len in shape.seq_lens:
        for checkpointing in (False, True):
            for kind in ("tmole", "lora"):
                model = with_adapter(
                    build_model(shape, device, torch.bfloat16), kind, checkpointing
                )
                adapter = sum(p.numel() for p in model.adapter.trainable_parameters())
                base = frozen_matmul_weights(model.lm)

                def step_for(
                    batch: int, model: RecFoundModel = model, seq_len: int = seq_len
                ) -> Callable[[], None]:
                    tokens = torch.randint(3, shape.vocab, (batch, seq_len), device=device)
                    return training_step(model, tokens)

                batch = largest_batch(step_for, args.max_batch)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                times = interleaved_times(
                    {kind: step_for(batch)},
                    args.warmup,
                    args.repeats,
                    device,
                    f"{kind} s={seq_len}",
                )[kind]
                seconds = statistics.median(times)
                flops = step_flops(batch * seq_len, seq_len, base, adapter, shape)
                rows.append(
                    {
                        "adapter": kind,
                        "seq_len": seq_len,
                        "checkpointing": checkpointing,
                        "batch": batch,
                        "adapter_params": adapter,
                        "seconds_per_step": seconds,
                        "tokens_per_s": batch * seq_len / seconds,
                        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30
                        if device.type == "cuda"
                        else None,
                        "mfu_of_measured_matmul": flops / seconds / (rate * 1e12),
                    }
                )
                del model
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return {"measured_bf16_matmul_tflops": rate, "steps": rows, "ratios": tmole_over_lora(rows)}


def tmole_over_lora(rows: list[dict]) -> dict[str, float]:
    """TMoLE's tokens/s over the equal-rank LoRA's, per (sequence length, checkpointing)."""
    by_key = {(r["seq_len"], r["checkpointing"], r["adapter"]): r["tokens_per_s"] for r in rows}
    return {
        f"s{s}_{'ckpt' if c else 'nockpt'}": by_key[(s, c, "tmole")] / by_key[(s, c, "lora")]
        for s, c, kind in by_key
        if kind == "tmole"
    }


def precision_check(device: torch.device) -> dict:
    """(c): one batch's loss in fp32 and under bf16 autocast, the same fp32 weights."""
    torch.manual_seed(0)
    model = with_adapter(build_model(SMOKE, device, torch.float32), "tmole", False).eval()
    tokens = torch.randint(3, SMOKE.vocab, (4, 32), device=device)
    task_ids = torch.tensor(GENERATIVE_TASK_IDS[:4], device=device)
    with torch.no_grad(), model.routed(task_ids):
        fp32 = float(model.lm(input_ids=tokens, labels=tokens).loss)
        with torch.autocast(device.type, torch.bfloat16):
            bf16 = float(model.lm(input_ids=tokens, labels=tokens).loss)
    return {"loss_fp32": fp32, "loss_bf16": bf16, "relative_difference": abs(bf16 - fp32) / fp32}


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    shape = SMOKE if args.smoke else MISTRAL_7B
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    result = {
        "device": name or platform.machine(),
        "smoke": args.smoke,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "shape": shape.__dict__,
        "flops_formula": "T·(4·P + 6·A + 12·L·s·d)",
        **measure_steps(args, shape, device),
        "precision": precision_check(device),
        "not_measured": [
            "(b) measured peak memory against `recfound plan`",
            "(d) a CUDA training run killed and resumed",
        ],
    }
    if "H100" in result["device"]:
        result["h100_datasheet_bf16_tflops"] = H100_DATASHEET_BF16_TFLOPS
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU")
    parser.add_argument("--out", type=Path, help="output folder (default: $OUT or bench/results)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args(argv)
    if args.smoke:
        args.max_batch = min(args.max_batch, 2)
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    folder = args.out or Path(os.environ.get("OUT") or "bench/results")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("gpu-smoke.json" if args.smoke else "gpu.json")
    result = run(args)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"], indent=2))
    print(f"results written to {path}")
    return path


if __name__ == "__main__":
    main()
