"""The ablation variants (paper Table 4): what each one is, and which of their results still hold.

`recfound ablate` (recfound.evaluate.ablate) trains and evaluates the variants; the `evaluate`
stage only reads what it wrote. Both need the definitions here, so they live apart from either:
the dependency points one way (ablate -> evaluate stage -> variants), and the evaluate stage
does not import the training code `recfound ablate` runs.

A variant's `variant.json` records `settings_fingerprint`: a hash of the params declared in
dvc.yaml by the stages a variant's numbers pass through (`VARIANT_STAGES`), so `evaluate`
leaves out (and names) variants whose settings params.yaml no longer produces.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recfound.config import Config
from recfound.errors import RecFoundError
from recfound.evaluate import bootstrap, report
from recfound.evaluate.report import Results
from recfound.stages import declared_settings

VARIANTS_DIR = "variants"  # under paths.reports: reports/variants/<name>/
VARIANT_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "no_s2sched": {"s2sched": {"enabled": False}},
    # Equal capacity: the LoRA has the rank of TMoLE's experts together (E·r), so the ablation
    # removes the task routing, not adapter width (recfound.model.adapters.equal_capacity_lora).
    "no_tmole": {"model": {"adapter": "lora", "lora": {"equal_capacity": True}}},
    "multitask_lora": {"model": {"adapter": "lora"}, "s2sched": {"enabled": False}},
}
# The stages a variant's numbers pass through: the dataset, the base model, training and the
# evaluation. Not validate (a gate: it changes no number) nor merge (variants are evaluated
# without Model Merge).
VARIANT_STAGES = ("build", "base_model", "train", "evaluate")
# Declared evaluate.* settings a variant's numbers do not depend on: which baselines / variants
# exist, and the bootstrap, whose intervals `evaluate` recomputes from the per-row statistics.
_NOT_FINGERPRINTED = (
    "evaluate.baselines",
    "evaluate.ablation_variants",
    "evaluate.bootstrap_samples",
    "evaluate.confidence",
    "evaluate.curve_tasks",  # the learning curve is the main run's, not a variant's
    "evaluate.curve_rows",
    "evaluate.catalogue_k",  # variants get no full-catalogue metrics
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
    """Hash of the settings a variant's numbers depend on: the params the `VARIANT_STAGES`
    declare in dvc.yaml, but which baselines / variants exist and the bootstrap. The data is
    not hashed."""
    settings = declared_settings(cfg, VARIANT_STAGES, leave_out=_NOT_FINGERPRINTED)
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
