"""Seconds and scores of every answer mode on a finished run's artifacts (read-only):
`python -m bench.answer_modes RUN_DIR` (RUN_DIR: a repository whose pipeline ran, e.g. a fresh
clone after `make repro`) writes bench/results/answer_modes.json.

RecFound (merged adapter) and the base model answer the label tasks' test rows in each mode of
recfound.evaluate.answer_modes; each result carries its bootstrap interval and, for a mode, the
paired difference from the same system's free answer. Label scores need no BERTScore, so
free-text scoring is an exact match that never runs.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

from bench import machine, write_result
from recfound.config import Config, load_config
from recfound.evaluate import answer_modes, bootstrap
from recfound.evaluate.protocol import evaluate_system
from recfound.evaluate.stage import load_splits
from recfound.evaluate.systems import LLMSystem, answer_budgets
from recfound.merge.layout import merged_adapter_dir
from recfound.model.predictor import Predictor

OUT = Path(__file__).parent / "results" / "answer_modes.json"


def run_config(run: Path) -> Config:
    """The run's params with its artifact paths made absolute (nothing is written there)."""
    raw = load_config(run / "params.yaml").model_dump(by_alias=True)
    for key in ("base_model", "unified", "merged", "adapter"):
        raw["paths"][key] = str(run / raw["paths"][key])
    return Config.model_validate(raw)


def exact_match(cands: list[str], refs: list[str]) -> list[float]:
    return [float(c == r) for c, r in zip(cands, refs, strict=True)]


def main(run: Path) -> None:
    cfg = run_config(run)
    data = load_splits(cfg)
    label = {c: rows for c, rows in data.test.items() if c in answer_modes.LABEL_TASKS}
    settings = bootstrap.BootstrapSettings.from_config(cfg)
    passages = answer_modes.catalogue_passages(cfg.paths.unified)
    result: dict = {"machine": machine(), "run": str(run), "systems": {}}
    for name, adapter in (("recfound", merged_adapter_dir(cfg)), ("base", None)):
        predictor = Predictor.load(cfg, cfg.paths.base_model, adapter)
        budgets = answer_budgets(
            data.train,
            predictor.tokenizer,
            cfg.evaluate.answer_margin_tokens,
            cfg.evaluate.max_new_tokens,
        )
        system = LLMSystem(name, predictor, budgets)
        start = time.perf_counter()
        runs = {name: evaluate_system(system, label, exact_match, cfg.evaluate.rank_cutoff)}
        seconds = {name: time.perf_counter() - start}
        for mode in answer_modes.ANSWER_MODES[1:]:
            start = time.perf_counter()
            runs.update(
                answer_modes.evaluate_modes(
                    system,
                    [mode],
                    label,
                    exact_match,
                    cfg.evaluate.rank_cutoff,
                    cfg.paths.unified,
                    passages,
                )
            )
            seconds[answer_modes.mode_system_name(name, mode)] = time.perf_counter() - start
        results = bootstrap.attach_intervals({n: r.results for n, r in runs.items()}, settings)
        for run_name, per_task in results.items():
            entry = {"seconds": round(seconds[run_name], 1), "tasks": {}}
            for code, res in per_task.items():
                ci = res.intervals[res.primary]
                answers = Counter(g["output"] for g in runs[run_name].generations[code])
                task = {
                    res.primary: res.score,
                    "ci": [ci.low, ci.high],
                    "answers": dict(answers.most_common(5)),
                }
                if run_name != name:
                    diff = bootstrap.paired_differences(
                        res.evidence,
                        results[name][code].evidence,
                        settings,
                        bootstrap.stream(code),
                    )[res.primary]
                    task["minus_free"] = [diff.value, diff.low, diff.high]
                entry["tasks"][code] = task
            result["systems"][run_name] = entry
        del predictor, system
    write_result(result, OUT)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve())
