"""Benchmark: a forward + backward of the base model in fp32 and under bf16 autocast, paired.

    python -m bench.precision [--params params.yaml] [--rounds 6] [--batch 4] [--length 256]

Writes bench/results/precision.json. The base model (paths.base_model, frozen, gradient to the
input embeddings as an adapter's would flow) runs one batch of random tokens per variant and
round, in alternating order (fp32 bf16, bf16 fp32, …), so machine load falls on both alike.
Reported: median seconds per variant, and the paired fp32/bf16 ratios (the speed-up of
`train.mixed_precision: auto` choosing bf16 where `native_bf16` says the device has it).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from bench import machine, write_result
from recfound.config import load_config
from recfound.model.unified import native_bf16

RESULTS = Path("bench/results/precision.json")
VARIANTS = ("fp32", "bf16")


def forward_backward(model: torch.nn.Module, ids: torch.Tensor, bf16: bool) -> float:
    """Seconds of one forward + backward through the decoder."""
    start = time.perf_counter()
    inputs = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        hidden = model.get_decoder()(inputs_embeds=inputs).last_hidden_state
    hidden.float().pow(2).mean().backward()
    return time.perf_counter() - start


def main() -> None:
    from transformers import AutoModelForCausalLM

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    cfg = load_config(args.params)
    model = AutoModelForCausalLM.from_pretrained(cfg.paths.base_model, dtype=torch.float32)
    model.requires_grad_(False)
    generator = torch.Generator().manual_seed(cfg.seed)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.length), generator=generator)
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
        for name in order:
            took = forward_backward(model, ids, bf16=name == "bf16")
            if round_:
                seconds[name].append(took)
    ratios = [a / b for a, b in zip(seconds["fp32"], seconds["bf16"], strict=True)]
    result = {
        "benchmark": "precision",
        "machine": machine(torch_threads=torch.get_num_threads(), native_bf16=native_bf16("cpu")),
        "settings": {"base_model": str(cfg.paths.base_model), **vars(args) | {"out": None}},
        "seconds_median": {k: round(statistics.median(v), 3) for k, v in seconds.items()},
        "paired_speedup_fp32_over_bf16": {
            "median": round(statistics.median(ratios), 3),
            "min": round(min(ratios), 3),
            "max": round(max(ratios), 3),
        },
    }
    result["settings"]["params"] = str(args.params)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
