"""The ablation variants (paper Table 4): what each one is, and which of their results still hold.

`recfound ablate` (recfound.evaluate.ablate) trains and evaluates the variants; the `evaluate`
stage only reads what it wrote. Both need the definitions here, so they live apart from either:
the dependency points one way (ablate -> evaluate stage -> variants), and the evaluate stage
does not import the training code `recfound ablate` runs.

A variant's `variant.json` (`variant_record`) records `settings_fingerprint`: a hash of the
params declared in dvc.yaml by the stages a variant's numbers pass through (`VARIANT_STAGES`),
so `evaluate` leaves out (and names) variants whose settings params.yaml no longer produces.

It also records `dtype`, what `model.dtype` resolved to where the variant ran (`run_dtype`):
`auto` is bf16 on a machine that multiplies it natively and fp32 elsewhere, so one setting,
one fingerprint, can train two different models. A variant trained under another dtype than
this run's (or one whose dtype was not recorded) stays in the tables, marked
(`unlike_this_run`), and is not paired with RecFound (`set_aside`): a paired difference would
mix the ablation with the dtype.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from recfound.config import Config
from recfound.data.bundled import DataKind, built_from_sample, caps_for
from recfound.errors import RecFoundError
from recfound.evaluate import bootstrap, report
from recfound.evaluate.report import Results
from recfound.outputs import BUILD_MANIFEST, METRICS_FILE
from recfound.stages import declared_settings

VARIANT_FILE = "variant.json"  # reports/variants/<name>/variant.json: `variant_record`
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
    "evaluate.leave_one_out",  # nor leave-one-out ones (recfound.evaluate.leave_one_out)
    "evaluate.answer_modes",  # nor the label tasks' other answer modes (main run only)
    "evaluate.popularity_prior_weights",  # nor the popularity prior (RecFound's, main run only)
    # The caps in force are hashed as build.*_per_task (settings_fingerprint puts the bundled
    # sample's there when the dataset was built from it), not as the section they came from.
    "build.sample_caps",
    # Bounds that decide whether a build passes, not which rows it writes, added after the
    # committed variants ran (the older max_drop_share keys stay hashed, which keeps their
    # fingerprints; they change no row either).
    "build.max_line_bytes",
    "build.max_drop_share.unknown_user",
    # Recomputes the activations it does not keep: the same gradients (tests/test_gradcache.py)
    "train.gradient_checkpointing",
)
# Settings a LoRA run (`model.adapter: lora`: no_tmole, multitask_lora) never reads: how TMoLE's
# routers start. (Its rank, alpha and experts stay hashed: `lora.equal_capacity` sizes the LoRA
# from them.)
_NOT_READ_BY_LORA = ("model.tmole.router_init",)


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
    declare in dvc.yaml, but which baselines / variants exist and the bootstrap, with the caps the
    build applied (the bundled sample's when the dataset in paths.unified came from it). The
    data is not hashed."""
    if built_from_sample(cfg.paths.unified):
        cfg = cfg.model_copy(update={"build": caps_for(cfg.build, DataKind(True, BUILD_MANIFEST))})
    leave_out = _NOT_FINGERPRINTED + (_NOT_READ_BY_LORA if cfg.model.adapter == "lora" else ())
    settings = declared_settings(cfg, VARIANT_STAGES, leave_out=leave_out)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def run_dtype(cfg: Config) -> str:
    """The dtype `model.dtype` resolves to on the device this process computes on (where
    recfound.model.inference loads a model), by torch's name: "bfloat16", "float32"."""
    from recfound.model.inference import default_device
    from recfound.model.unified import resolve_dtype

    return str(resolve_dtype(cfg.model, default_device())).removeprefix("torch.")


def variant_record(vcfg: Config, name: str) -> dict[str, Any]:
    """What `variant.json` says of variant `name` run with `vcfg` (`variant_config`): its
    overrides, its settings fingerprint and the dtype it ran under."""
    return {
        "name": name,
        "overrides": VARIANT_OVERRIDES[name],
        "settings": settings_fingerprint(vcfg),
        "dtype": run_dtype(vcfg),
    }


def read_record(variants_dir: Path, name: str) -> dict[str, Any]:
    """Variant `name`'s `variant.json` ({} when it has none)."""
    path = variants_dir / name / VARIANT_FILE
    return json.loads(path.read_text("utf-8")) if path.is_file() else {}


def unlike_this_run(cfg: Config, variants_dir: Path, names: Iterable[str]) -> dict[str, str]:
    """The variants among `names` that did not run under this run's dtype (`run_dtype`), each
    with why, e.g. "trained under bfloat16, this run float32"."""
    this = run_dtype(cfg)
    unlike = {}
    for name in names:
        dtype = read_record(variants_dir, name).get("dtype")
        if dtype is None:
            unlike[name] = f"dtype not recorded, this run {this}"
        elif dtype != this:
            unlike[name] = f"trained under {dtype}, this run {this}"
    return unlike


def set_aside(
    comparisons: bootstrap.Comparisons, unlike: Mapping[str, str]
) -> bootstrap.Comparisons:
    """`comparisons` without the paired differences of the `unlike` systems, which are named
    among those left out, with why (`unlike_this_run`)."""
    kept = {name: d for name, d in comparisons.differences.items() if name not in unlike}
    left_out = dict(comparisons.left_out)
    left_out.update({name: why for name, why in unlike.items() if name not in left_out})
    return dataclasses.replace(comparisons, differences=kept, left_out=left_out)


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
    for metrics in sorted(variants_dir.glob(f"*/{METRICS_FILE}")):
        name = metrics.parent.name
        record = read_record(variants_dir, name)
        if name not in VARIANT_OVERRIDES or record.get("settings") != settings_fingerprint(
            variant_config(cfg, name)
        ):
            stale.append(name)
    return stale
