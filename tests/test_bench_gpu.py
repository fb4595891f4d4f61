"""bench/gpu.py runs at tiny shapes on CPU (`--smoke`), so the GPU check cannot rot."""

from __future__ import annotations

import json

import pytest

from bench import gpu


@pytest.mark.usefixtures("one_thread")
def test_the_gpu_bench_smoke_run_measures_every_configuration(tmp_path):
    path = gpu.main(["--smoke", "--out", str(tmp_path), "--threads", "1", "--repeats", "1"])
    result = json.loads(path.read_text())
    configurations = {(r["adapter"], r["seq_len"], r["checkpointing"]) for r in result["steps"]}
    assert configurations == {
        (kind, s, c)
        for kind in ("tmole", "lora")
        for s in gpu.SMOKE.seq_lens
        for c in (False, True)
    }
    for row in result["steps"]:
        assert row["batch"] >= 1 and row["tokens_per_s"] > 0
        assert 0 < row["mfu_of_measured_matmul"] < 10  # a rate, not a count
        assert row["adapter_params"] > 0
    assert set(result["ratios"]) == {"s16_nockpt", "s16_ckpt", "s32_nockpt", "s32_ckpt"}
    assert result["precision"]["relative_difference"] < 0.05  # bf16 autocast changes little
    assert result["measured_bf16_matmul_tflops"] > 0


def test_equal_rank_lora_has_as_many_adapter_weights_as_tmoles_experts():
    import torch

    device = torch.device("cpu")
    tmole = gpu.with_adapter(gpu.build_model(gpu.SMOKE, device, torch.float32), "tmole", False)
    lora = gpu.with_adapter(gpu.build_model(gpu.SMOKE, device, torch.float32), "lora", False)
    experts = sum(p.numel() for n, p in tmole.named_parameters() if "lora_" in n)
    lora_weights = sum(p.numel() for p in lora.adapter.trainable_parameters())
    assert experts == lora_weights


def test_step_flops_follow_the_stated_formula():
    shape = gpu.SMOKE
    flops = gpu.step_flops(tokens=10, seq_len=4, base=100, adapter=7, shape=shape)
    assert flops == 10 * (4 * 100 + 6 * 7 + 12 * shape.layers * 4 * shape.hidden)
