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
    <paths.reports>/variants/<name>/variant.json   the overrides that define the variant, and a
                                                   fingerprint of the settings it ran with

The `evaluate` stage reads reports/variants/*/metrics.json into the ablation table, leaving out
(and naming) variants whose fingerprint no longer matches params.yaml; run
`dvc repro evaluate` (or `recfound stage evaluate`) afterwards to refresh reports/results.md.
Training resumes from a variant's own checkpoints when it is re-run with the same settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recfound.atomic import atomic_dir
from recfound.config import Config
from recfound.errors import RecFoundError
from recfound.evaluate import bootstrap, report
from recfound.evaluate.report import Results

VARIANT_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "no_s2sched": {"s2sched": {"enabled": False}},
    # Equal capacity: the LoRA has the rank of TMoLE's experts together (E·r), so the ablation
    # removes the task routing, not adapter width (recfound.model.adapters.equal_capacity_lora).
    "no_tmole": {"model": {"adapter": "lora", "lora": {"equal_capacity": True}}},
    "multitask_lora": {"model": {"adapter": "lora"}, "s2sched": {"enabled": False}},
}
# evaluate.* settings a variant's numbers do not depend on: which baselines / variants exist,
# and the bootstrap, whose intervals `evaluate` recomputes from the variant's per-row statistics.
_NOT_FINGERPRINTED = (
    "baselines",
    "ablation_variants",
    "bootstrap_samples",
    "confidence",
    "curve_tasks",  # the learning curve is the main run's, not a variant's
    "curve_rows",
)


def _deep_update(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out


def variant_config(cfg: Config, name: str) -> Config:
    """`cfg` with variant `name`'s overrides and its own checkpoint/adapter/metrics paths."""
    if name not in VARIANT_OVERRIDES:
        raise RecFoundError(
            f"unknown variant {name!r}; expected one of {', '.join(VARIANT_OVERRIDES)}"
        )
    root = Path(cfg.paths.adapter).parent / "variants" / name
    raw = _deep_update(cfg.model_dump(by_alias=True), VARIANT_OVERRIDES[name])
    raw["paths"].update(
        checkpoints=root / "checkpoints", adapter=root / "adapter", train_metrics=root / "train"
    )
    return Config.model_validate(raw)


def settings_fingerprint(cfg: Config) -> str:
    """Hash of the settings a variant's numbers depend on: everything but where files go, the
    services, which baselines / variants exist and the bootstrap. The data is not hashed."""
    settings = cfg.model_dump(
        mode="json", by_alias=True, exclude={"paths", "tracking", "orchestration"}
    )
    for key in _NOT_FINGERPRINTED:
        settings["evaluate"].pop(key)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def current_variants(cfg: Config, variants_dir: Path) -> tuple[Results, list[str]]:
    """The variant results under `variants_dir` that match today's settings, and the names of
    the stale ones left out (`stale_variants`). Each result carries its per-row statistics
    when the variant has an evidence.json (variants run before intervals existed have none)."""
    stale = stale_variants(cfg, variants_dir)
    results = report.read_variants(variants_dir, cfg.evaluate.rank_cutoff)
    current = {}
    for name, per_task in results.items():
        if name in stale:
            continue
        path = variants_dir / name / bootstrap.EVIDENCE_FILE
        if path.is_file():
            per_task = bootstrap.attach_evidence(per_task, bootstrap.read_evidence(path), path)
        current[name] = per_task
    return current, stale


def stale_variants(cfg: Config, variants_dir: Path) -> list[str]:
    """Variants under `variants_dir` with results that params.yaml would no longer produce:
    an unknown name, or a settings fingerprint (variant.json) that differs from today's."""
    stale = []
    for metrics in sorted(variants_dir.glob("*/metrics.json")):
        name = metrics.parent.name
        record_path = metrics.parent / "variant.json"
        record = json.loads(record_path.read_text("utf-8")) if record_path.is_file() else {}
        if name not in VARIANT_OVERRIDES or record.get("settings") != settings_fingerprint(
            variant_config(cfg, name)
        ):
            stale.append(name)
    return stale


def variant_report_dir(cfg: Config, name: str) -> Path:
    """reports/variants/<name>/ of the main configuration."""
    return Path(cfg.paths.reports) / "variants" / name


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
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        evidence = json.dumps(bootstrap.evidence_json(results), ensure_ascii=False)
        (tmp / bootstrap.EVIDENCE_FILE).write_text(evidence + "\n", encoding="utf-8")
        (tmp / "variant.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "overrides": VARIANT_OVERRIDES[name],
                    "settings": settings_fingerprint(vcfg),
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
    print(f"ablation {name}: metrics in {out / 'metrics.json'}")
    return out


def ablate(cfg: Config, names: Sequence[str] | None = None) -> list[Path]:
    """Run the given variants (default: `evaluate.ablation_variants`) one after another."""
    chosen = list(names) if names else list(cfg.evaluate.ablation_variants)
    for name in chosen:
        variant_config(cfg, name)  # fail on an unknown name before hours of training
    written = [run_variant(cfg, name) for name in chosen]
    print("refresh the tables with `dvc repro evaluate` (or `recfound stage evaluate`)")
    return written
