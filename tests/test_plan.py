"""The paper preset (configs/paper/params.yaml), the fit check against a model config alone, and
`recfound plan`'s memory plan: measured on fake tensors, checked against a real step's peak."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from typer.testing import CliRunner

from recfound.cli import app
from recfound.config import Config, load_config
from recfound.model.adapters import attach_adapter
from recfound.model.fit import fit_problems, load_model_config
from recfound.model.unified import RecFoundModel
from recfound.train.loop import make_adamw
from recfound.train.objective import MultiTaskObjective
from recfound.train.plan import (
    GIB,
    ParameterCounts,
    memory_tracker,
    peak_bytes,
    plan_memory,
    static_parts,
    worst_case_batch,
)

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper" / "params.yaml"
# A config may be off the measured peak by this share (docs/training.md, "Paper scale")
PLAN_TOLERANCE = 0.15


def mistral_7b_config(**changes) -> transformers.MistralConfig:
    """Mistral-7B-Instruct-v0.3's shape (its config.json), built locally: no hub."""
    shape = dict(
        num_hidden_layers=32,
        hidden_size=4096,
        intermediate_size=14336,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=32768,
        max_position_embeddings=32768,
        sliding_window=None,
        rope_theta=1e6,
    )
    return transformers.MistralConfig(**(shape | changes))


def test_paper_preset_loads_with_the_authors_values() -> None:
    cfg = load_config(PAPER)
    assert cfg.model.base == "models/Mistral-7B-Instruct-v0.3"
    assert cfg.model.preset == "authors"
    assert cfg.model.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert (cfg.model.tmole.rank, cfg.model.tmole.alpha, cfg.model.tmole.dropout) == (16, 64, 0.1)
    assert cfg.model.dtype == "bfloat16" and cfg.train.mixed_precision == "bf16"
    assert cfg.model.temperature == 0.02
    assert cfg.train.gradient_checkpointing and cfg.train.grad_cache
    assert (cfg.train.embedding_per_batch, cfg.train.grad_accum) == (16, 64)
    assert cfg.train.group_size == 2  # one hard negative
    assert (cfg.train.max_len_query, cfg.train.max_len_passage) == (256, 2048)
    assert cfg.train.max_len_prompt + cfg.train.max_len_response == 2048
    assert cfg.train.lr == 2e-5


def test_paper_preset_sets_every_key_the_config_accepts() -> None:
    """A complete params file: the same keys as the repo's params.yaml, nothing left implicit."""

    def keys(tree: dict, prefix: str = "") -> set[str]:
        out = set()
        for key, value in tree.items():
            out.add(prefix + key)
            if isinstance(value, dict):
                out |= keys(value, f"{prefix}{key}.")
        return out

    import yaml

    ours = keys(yaml.safe_load(PAPER.read_text(encoding="utf-8")))
    repo = keys(yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8")))
    assert ours == repo


def test_the_paper_preset_fits_mistral_7b() -> None:
    assert fit_problems(load_config(PAPER), mistral_7b_config()) == []


def test_fit_problems_name_absent_modules_and_lengths_beyond_the_model() -> None:
    cfg = Config.model_validate(
        {"model": {"target_modules": ["q_proj", "fc1"]}, "train": {"max_len_passage": 4096}}
    )
    problems = fit_problems(cfg, mistral_7b_config(max_position_embeddings=2048))
    assert len(problems) == 2
    assert "['fc1']" in problems[0] and "gate_proj" in problems[0]  # names what there is
    assert "train.max_len_passage = 4096" in problems[1] and "2048" in problems[1]


def measured_step_peak(cfg: Config, model_dir: Path) -> int:
    """The peak bytes of one real training step in fp32 on CPU, as MemTracker counts them:
    `grad_accum` micro-batches' forward and backward, then AdamW's step, after a first step
    has created AdamW's state (the steady state every later step is in)."""
    lm = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    adapter = attach_adapter(lm, cfg.model)
    model = RecFoundModel(lm, adapter)
    if cfg.train.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    objective = MultiTaskObjective.from_config(model, cfg)
    optimizer = make_adamw(adapter.trainable_parameters(), cfg.train)
    batch = worst_case_batch(cfg.train)

    def step(tracker: Any = None) -> None:
        for _ in range(cfg.train.grad_accum):
            if tracker is not None:  # MemTracker takes one top-level call per module: the
                tracker.reset_mod_stats()  # next micro-batch is a call of its own (peak kept)
            objective(**batch)["backward"].backward()
        optimizer.step()
        optimizer.zero_grad()

    step()
    tracker = memory_tracker(objective)
    tracker.track_external(optimizer)
    with tracker:
        step(tracker)
    return peak_bytes(tracker)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_plan_predicts_a_real_steps_peak_within_15_percent(
    tiny_model_dir: Path, one_thread: None, checkpointing: bool
) -> None:
    cfg = Config.model_validate(
        {
            "model": {"base": str(tiny_model_dir), "dtype": "float32"},
            "train": {
                "mixed_precision": "no",
                "embedding_per_batch": 4,
                "generative_per_batch": 4,
                "max_len_query": 32,
                "max_len_passage": 64,
                "max_len_prompt": 96,
                "max_len_response": 32,
                "grad_accum": 2,  # the second micro-batch runs with the first's gradients
                "grad_cache": False,  # a plain step; GradCache's terms are formulas
                "gradient_checkpointing": checkpointing,
            },
        }
    )
    torch.manual_seed(0)
    plan = plan_memory(cfg, load_model_config(tiny_model_dir), gpus=1)
    assert plan.activations.method.startswith("measured")
    measured = measured_step_peak(cfg, tiny_model_dir)
    assert plan.total == pytest.approx(measured, rel=PLAN_TOLERANCE)


def test_fsdp_shards_weights_and_optimizer_over_the_gpus() -> None:
    cfg = load_config(PAPER)
    counts = ParameterCounts(base=7_000_000_000, adapter=80_000_000, layer=200_000_000)
    ddp = static_parts(cfg, counts, 8, "ddp")
    fsdp = static_parts(cfg, counts, 8, "fsdp")
    assert ddp["frozen base weights (bfloat16)"] == 14_000_000_000  # bf16: 2 bytes
    assert fsdp["frozen base weights (bfloat16, sharded)"] == 14_000_000_000 / 8
    assert ddp["AdamW state (2 x fp32)"] == 2 * 4 * 80_000_000
    assert fsdp["AdamW state (2 x fp32)"] == 2 * 4 * 80_000_000 / 8
    assert fsdp["FSDP gathered layers"] == 2 * 2 * 200_000_000


def test_recfound_plan_says_the_paper_preset_fits_8_gpus_of_80_gb(tmp_path: Path) -> None:
    mistral_7b_config().save_pretrained(tmp_path / "mistral")
    out = tmp_path / "plan.json"
    args = ["plan", "--params", str(PAPER), "--model-config", str(tmp_path / "mistral")]
    args += ["--gpus", "8", "--gpu-memory-gib", "80", "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "fits in 80 GiB" in result.output and "problem:" not in result.output
    plan = json.loads(out.read_text(encoding="utf-8"))
    assert plan["fits"] and plan["total"] <= 80 * GIB
    assert plan["parameters"]["adapter"] == 82_189_568  # the authors' 82,182,912 + task table
    # without checkpointing the same run does not fit: the preset needs it
    assert plan["activations"]["checkpointing_off"] > 80 * GIB


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "not found"), ("{", "not valid JSON"), ('{"hidden_size": 8}', "no model_type")],
)
def test_recfound_plan_names_a_bad_model_config(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    config = tmp_path / "config.json"
    if content is not None:
        config.write_text(content, encoding="utf-8")
    args = ["plan", "--params", str(PAPER), "--model-config", str(config)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert str(config) in result.output and reason in result.output


def test_where_the_fake_run_fails_the_plan_says_so_and_estimates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from recfound.train import plan as memory

    def unmeasurable(*args: object) -> int:
        raise RuntimeError("reads a value")

    monkeypatch.setattr(memory, "probe_activation_peak", unmeasurable)
    activations = memory.measure_activations(load_config(PAPER), mistral_7b_config())
    assert activations.method.startswith("analytic") and "reads a value" in activations.method
    assert 0 < activations.checkpointing_on < activations.checkpointing_off
