"""`recfound ablate`: train and evaluate the ablation variants of the paper's Table 4.

Each variant is the main configuration with a few overrides, trained from scratch into its
own directories and evaluated on the test split WITHOUT Model Merge (the paper compares the
ablations with "RecFound w/o Model Merge"):

    no_s2sched      TMoLE, S2Sched off (slots proportional to task sizes throughout)
    no_tmole        one plain PEFT LoRA for all tasks, of TMoLE's total rank (E·r: equal
                    capacity), S2Sched on
    multitask_lora  plain LoRA and no S2Sched: the GritLM-style multi-task finetune

Layout (both outside the DVC stage outputs, so `dvc repro` never deletes them):
    <parent of paths.adapter>/variants/<name>/{checkpoints,adapter,train}/   training outputs
    <paths.reports>/variants/<name>/metrics.json   {task code: {metric: value, "n", "invalid",
                                                   "ci"}}
    <paths.reports>/variants/<name>/evidence.json  its per-row statistics (recfound.evaluate.
                                                   bootstrap), so that `evaluate` can pair it
                                                   with RecFound row by row
    <paths.reports>/variants/<name>/variant.json   the overrides that define the variant, a
                                                   fingerprint of the settings it ran with and
                                                   the dtype it ran under

The `evaluate` stage reads reports/variants/*/metrics.json into the ablation table, leaving out
(and naming) variants whose fingerprint no longer matches params.yaml (the variants and their
fingerprint are defined in recfound.evaluate.variants, which both read); run
`dvc repro evaluate` (or `recfound stage evaluate`) afterwards to refresh reports/results.md.
Training resumes from a variant's own checkpoints when it is re-run with the same settings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from recfound.atomic import atomic_dir
from recfound.config import Config
from recfound.evaluate import bootstrap
from recfound.evaluate.variants import (
    VARIANT_FILE,
    variant_config,
    variant_record,
)
from recfound.outputs import METRICS_FILE, VARIANTS_DIR


def variant_report_dir(cfg: Config, name: str) -> Path:
    """reports/variants/<name>/ of the main configuration."""
    return Path(cfg.paths.reports) / VARIANTS_DIR / name


def run_variant(cfg: Config, name: str) -> Path:
    """Train variant `name`, evaluate its final adapter on the test split, write its metrics."""
    from recfound.evaluate.stage import evaluate_llm, load_splits, text_scorer
    from recfound.train.stage import run as train

    vcfg = variant_config(cfg, name)
    print(f"ablation {name}: training into {Path(vcfg.paths.adapter).parent}")
    train(vcfg)
    data = load_splits(vcfg)
    adapter = Path(vcfg.paths.adapter)
    run, _ = evaluate_llm(vcfg, name, adapter, data.test, data.train, text_scorer(vcfg))
    settings = bootstrap.BootstrapSettings.from_config(vcfg)
    results = {task: bootstrap.with_intervals(r, settings) for task, r in run.results.items()}
    out = variant_report_dir(cfg, name)
    with atomic_dir(out) as tmp:
        metrics = {task: result.to_json() for task, result in results.items()}
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        evidence = json.dumps(bootstrap.evidence_json(results), ensure_ascii=False)
        (tmp / bootstrap.EVIDENCE_FILE).write_text(evidence + "\n", encoding="utf-8")
        record = json.dumps(variant_record(vcfg, name), indent=2)
        (tmp / VARIANT_FILE).write_text(record + "\n", encoding="utf-8")
    print(f"ablation {name}: metrics in {out / METRICS_FILE}")
    return out


def ablate(cfg: Config, names: Sequence[str] | None = None) -> list[Path]:
    """Run the given variants (default: `evaluate.ablation_variants`) one after another."""
    chosen = list(names) if names else list(cfg.evaluate.ablation_variants)
    for name in chosen:
        variant_config(cfg, name)  # fail on an unknown name before hours of training
    written = [run_variant(cfg, name) for name in chosen]
    print("refresh the tables with `dvc repro evaluate` (or `recfound stage evaluate`)")
    return written
