"""The `index` stage and `recfound recommend` on the tiny model and the sample build.

The stage writes one index per embedding task over the whole catalogue, embedded as the
evaluation embeds passages; DVC reruns it for a new model or catalogue and not for evaluation
settings; `recommend` asks as the task's rows ask, leaves out what it must, ranks best first,
and fails in one line (a stale index: one line saying to run `dvc repro index`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from test_build import BUILD, SAMPLE
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from recfound.cli import app
from recfound.config import Config, ModelConfig
from recfound.data.build import write_unified
from recfound.data.catalogue import (
    CATALOGUE_FILE,
    read_catalogue,
    read_seen,
)
from recfound.data.instructions import INSTRUCTIONS
from recfound.data.sample import write_sample
from recfound.index.recommend import INPUT_PREVIEW_CHARS, Catalogue, user_query
from recfound.index.stage import (
    SUMMARY_FILE,
    fingerprints,
    indexed_tasks,
    load_task_index,
    merged_adapter_dir,
    run,
)
from recfound.merge.layout import MERGED_ADAPTER_DIR
from recfound.outputs import SEQUENCES_FILE
from recfound.stages import read_stages
from recfound.tasks import task_by_code

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(sys.executable).parent
EMBEDDING_CODES = ("U2I", "Q2I", "I2I")
runner = CliRunner()


def random_adapter(model_dir: Path, cfg: ModelConfig, out: Path, seed: int) -> Path:
    """A saved adapter with random (not identity) weights: tasks route to different vectors."""
    from recfound.model.adapters import attach_adapter

    adapter = attach_adapter(AutoModelForCausalLM.from_pretrained(model_dir), cfg)
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in adapter.trainable_parameters():
            param.normal_(std=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    adapter.save(out)
    return out


def with_paths(cfg: Config, **paths: Path) -> Config:
    raw = cfg.model_dump(by_alias=True)
    raw["paths"].update(paths)
    return Config.model_validate(raw)


def params_file(cfg: Config, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir: Path, default_config: Config, one_thread):
    """(config, its params.yaml): the sample built, a random merged adapter, the index stage run."""
    root = tmp_path_factory.mktemp("recommend")
    raw = default_config.model_dump(by_alias=True)
    raw["build"] = BUILD.model_dump()  # the rows were rendered with these settings
    raw["model"]["tmole"]["task_embedding_dim"] = 16
    raw["paths"].update(
        data=root / "data",
        base_model=tiny_model_dir,
        unified=root / "unified",
        merged=root / "merged",
        index=root / "index",
    )
    cfg = Config.model_validate(raw)
    write_unified(write_sample(cfg.paths.data, SAMPLE), BUILD, cfg.paths.unified)
    random_adapter(tiny_model_dir, cfg.model, merged_adapter_dir(cfg), seed=1)
    run(cfg)
    return cfg, params_file(cfg, root / "params.yaml")


def recommend(params: Path, *args: str):
    return runner.invoke(app, ["recommend", *args, "--params", str(params)])


def recommended(params: Path, *args: str) -> dict[str, Any]:
    result = recommend(params, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def one_line_error(result) -> str:
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    return result.stderr.strip()


def longest_history(cfg: Config) -> tuple[str, list[str]]:
    table = pq.read_table(cfg.paths.unified / SEQUENCES_FILE).to_pylist()
    row = max(table, key=lambda r: (len(r["item_ids"]), r["user_id"]))
    return row["user_id"], row["item_ids"]


def assert_best_first(items: list[dict[str, Any]], titles: dict[str, str]) -> None:
    scores = [item["score"] for item in items]
    assert scores == sorted(scores, reverse=True)
    assert [item["rank"] for item in items] == list(range(1, len(items) + 1))
    assert all(item["title"] == titles[item["item_id"]] for item in items)


def catalogue_titles(cfg: Config) -> dict[str, str]:
    table = read_catalogue(cfg.paths.unified)
    return dict(zip(table["item_id"].to_pylist(), table["title"].to_pylist(), strict=True))


# --- the index stage


def test_the_stage_indexes_the_whole_catalogue_once_per_embedding_task(workspace):
    cfg, _ = workspace
    catalogue = read_catalogue(cfg.paths.unified)
    expect = fingerprints(cfg.paths.base_model, merged_adapter_dir(cfg), catalogue)
    assert indexed_tasks(cfg.paths.index) == EMBEDDING_CODES
    summary = json.loads((cfg.paths.index / SUMMARY_FILE).read_text())
    indexes = {
        code: load_task_index(cfg.paths.index, code, cfg.index, expect) for code in summary["tasks"]
    }
    for code, index in indexes.items():
        assert index.ids == catalogue["item_id"].to_pylist()  # every item, catalogue order
        assert summary["manifests"][code]["fingerprints"] == {**expect, "task": code}
    # TMoLE routes passages by task: the same item has a vector per task
    assert not np.allclose(indexes["U2I"].vectors(), indexes["I2I"].vectors(), atol=1e-3)


def test_catalogue_vectors_are_the_evaluations_passage_embeddings(workspace):
    from recfound.evaluate.systems import LLMSystem
    from recfound.model.predictor import Predictor

    cfg, _ = workspace
    passages = read_catalogue(cfg.paths.unified)["passage"].to_pylist()[:6]
    system = LLMSystem(
        "recfound", Predictor.load(cfg, cfg.paths.base_model, merged_adapter_dir(cfg), "cpu")
    )
    for code in EMBEDDING_CODES:
        index = load_task_index(cfg.paths.index, code, cfg.index, {})
        evaluated = system.embedder(task_by_code(code), progress=False)(passages, "")
        np.testing.assert_allclose(index.vectors()[:6], evaluated, atol=1e-4)


def dvc(repo: Path, *args: str) -> str:
    done = subprocess.run(
        [str(SCRIPTS / "dvc"), *args], cwd=repo, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"dvc {' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_dvc_reruns_the_index_for_a_new_model_or_catalogue_not_for_evaluate_params(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    dvc(repo, "init", "--no-scm", "-q")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    stage = read_stages(ROOT)["index"]
    inputs = {
        "artifacts/base_model": "config.json",
        "artifacts/merged": "adapter/w",
        "artifacts/unified": CATALOGUE_FILE,
    }
    for dep in stage.deps:
        target = repo / dep
        target.parent.mkdir(parents=True, exist_ok=True)
        if dep in inputs:
            (target / inputs[dep]).parent.mkdir(parents=True)
            (target / inputs[dep]).write_text("v1")
        elif (ROOT / dep).is_dir():
            shutil.copytree(ROOT / dep, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / dep, target)
    (repo / "artifacts/index").mkdir()
    (repo / "artifacts/index" / SUMMARY_FILE).write_text("{}")
    dvc(repo, "commit", "-f", "-q", "index")

    def status() -> str:
        return dvc(repo, "status", "--json", "index").strip()

    def set_param(dotted: str, value: object) -> None:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        section, key = dotted.split(".")
        params[section][key] = value
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    assert json.loads(status()) == {}
    # evaluation and query-time settings: not what the index is built from
    for dotted, value in {
        "evaluate.rank_cutoff": 5,
        "evaluate.batch_size": 3,
        "index.top_k": 3,
        "index.overfetch": 4.0,
        "index.hnsw_ef_search": 64,
        "index.batch_size": 2,
        "index.chunk_items": 7,
    }.items():
        set_param(dotted, value)
    assert json.loads(status()) == {}
    set_param("index.hnsw_m", 8)
    assert "index.hnsw_m" in status()
    set_param("index.hnsw_m", 32)
    for dep, file in inputs.items():
        (repo / dep / file).write_text("v2")
        assert dep in status(), dep
        (repo / dep / file).write_text("v1")
    assert json.loads(status()) == {}


# --- recommend


def test_a_users_query_is_asked_as_the_u2i_rows_ask_it(workspace):
    cfg, _ = workspace
    catalogue = Catalogue(read_catalogue(cfg.paths.unified))
    seen = read_seen(cfg.paths.unified)
    dataset = datasets.load_from_disk(str(cfg.paths.unified))
    rows = [row for split in dataset.values() for row in split if row["task"] == "U2I"]
    assert {row["source"] for row in rows} >= {"movielens"}, "both instructions are checked"
    for row in rows:
        user, position = seen.positions[row["id"]]
        history = list(seen.histories[user][:position])
        query = user_query(catalogue, user, history, cfg.build.max_history, seen=False)
        assert (query.text, query.instruction) == (row["input"], row["instruction"])


def test_a_user_gets_k_unseen_items_best_first_with_their_titles(workspace):
    cfg, params = workspace
    user, history = longest_history(cfg)
    answer = recommended(params, "--user", user, "-k", "5")
    ids = [item["item_id"] for item in answer["items"]]
    assert len(ids) == 5 and not set(ids) & set(history)
    assert_best_first(answer["items"], catalogue_titles(cfg))
    assert (answer["task"], answer["for"], answer["left_out"]) == (
        "U2I",
        f"user {user}",
        len(set(history)),
    )


def test_include_seen_keeps_the_users_own_items(workspace):
    cfg, params = workspace
    user, history = longest_history(cfg)
    everything = str(len(catalogue_titles(cfg)))
    unseen = recommended(params, "--user", user, "-k", everything)["items"]
    all_items = recommended(params, "--user", user, "-k", everything, "--include-seen")["items"]
    assert {i["item_id"] for i in all_items} - {i["item_id"] for i in unseen} == set(history)


def test_an_item_is_never_its_own_recommendation(workspace):
    cfg, params = workspace
    titles = catalogue_titles(cfg)
    item = sorted(titles)[0]
    answer = recommended(params, "--item", item, "-k", str(len(titles) - 1))
    assert {i["item_id"] for i in answer["items"]} == set(titles) - {item}
    assert_best_first(answer["items"], titles)
    table = recommend(params, "--item", item, "-k", "3")
    lines = table.stdout.splitlines()
    assert lines[0] == f"I2I for item {item} (1 left out)" and len(lines) == 2 + 3
    assert [line.split()[1] for line in lines[2:]] == [i["item_id"] for i in answer["items"][:3]]


def test_a_query_scores_items_by_cosine_with_the_q2i_instruction(workspace):
    from recfound.model.predictor import Predictor

    cfg, params = workspace
    text = "waterproof hiking boots"
    answer = recommended(params, "--query", text, "-k", "4")
    index = load_task_index(cfg.paths.index, "Q2I", cfg.index, {})
    predictor = Predictor.load(cfg, cfg.paths.base_model, merged_adapter_dir(cfg), "cpu")
    embed = predictor.embedder(task_by_code("Q2I"))
    scores = index.vectors() @ embed([text], INSTRUCTIONS["Q2I"])[0]
    best = np.argsort(-scores, kind="stable")[:4]
    assert [i["item_id"] for i in answer["items"]] == [index.ids[j] for j in best]
    np.testing.assert_allclose([i["score"] for i in answer["items"]], scores[best], atol=1e-5)


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--user", "nobody"], "error: unknown user 'nobody'", 1),
        (["--item", "nothing"], "error: unknown item 'nothing': not in the catalogue", 1),
        (["--query", "  "], "error: the query is empty", 1),
        (["--query", "boots", "-k", "0"], "error: k must be between 1 and the catalogue's", 1),
        (["--query", "boots", "-k", "100000"], "error: k must be between 1 and", 1),
        (["--query", "boots", "--item", "x"], "error: give exactly one of --user", 2),
        ([], "error: give exactly one of --user", 2),
        (["--query", "boots", "--include-seen"], "error: --include-seen applies to --user", 2),
        (["--list", "users", "--query", "x"], "error: give exactly one of --user", 2),
        (["--query", "boots", "--limit", "5"], "error: --limit applies to --list only", 2),
    ],
)
def test_bad_requests_are_one_line_errors(workspace, args, message, code):
    _, params = workspace
    result = recommend(params, *args)
    assert one_line_error(result).startswith(message)
    assert result.exit_code == code


@pytest.mark.parametrize("change", ["model", "catalogue", "missing"])
def test_a_stale_or_missing_index_says_to_run_dvc_repro_index(workspace, tmp_path, change):
    cfg, _ = workspace
    if change == "model":
        merged = tmp_path / "merged"
        random_adapter(cfg.paths.base_model, cfg.model, merged / MERGED_ADAPTER_DIR, seed=2)
        stale = with_paths(cfg, merged=merged)
    elif change == "catalogue":
        unified = Path(shutil.copytree(cfg.paths.unified, tmp_path / "unified"))
        table = pq.read_table(unified / CATALOGUE_FILE)
        pq.write_table(table.slice(1), unified / CATALOGUE_FILE)  # one item fewer
        stale = with_paths(cfg, unified=unified)
    else:
        stale = with_paths(cfg, index=tmp_path / "no-index")
    error = one_line_error(recommend(params_file(stale, tmp_path / "params.yaml"), "--query", "x"))
    assert error.endswith("run `dvc repro index`")
    if change != "missing":
        assert "other inputs" in error and repr(change) in error


# --- query input: the cap, --file


def test_a_long_query_is_cut_to_serve_max_input_chars_with_a_note_and_a_short_echo(workspace):
    cfg, params = workspace
    limit = cfg.serve.max_input_chars
    text = ("waterproof hiking boots for long trails " * 3000)[:119_999] + "!"
    result = recommend(params, "--query", text, "-k", "3")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(
        f"note: the query has 120,000 characters; only the first {limit:,} "
        "(serve.max_input_chars) were kept\n"
    )
    heading = result.stdout.splitlines()[0]
    assert heading.startswith("Q2I for query 'waterproof") and len(heading) < 100
    answer = recommended(params, "--query", text, "-k", "3")
    assert (answer["input_chars"], answer["cut_from_chars"]) == (
        len(text[:limit].rstrip()),
        120_000,
    )
    assert len(answer["input"]) <= INPUT_PREVIEW_CHARS
    # what was embedded is the first `limit` characters, no more
    assert answer["items"] == recommended(params, "--query", text[:limit], "-k", "3")["items"]


def test_a_file_of_queries_answers_each_line_as_query_does(workspace, tmp_path):
    _, params = workspace
    queries = ["waterproof hiking boots", "vanilla conditioner", "yoga mat"]
    lines_file = tmp_path / "queries.txt"
    lines_file.write_text("\n".join([queries[0], "", *queries[1:]]) + "\n")  # blank: skipped
    result = recommend(params, "--file", str(lines_file), "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == 3
    for text, answer in zip(queries, answers, strict=True):
        alone = recommended(params, "--query", text, "-k", "3")
        assert [i["item_id"] for i in answer["items"]] == [i["item_id"] for i in alone["items"]]
        np.testing.assert_allclose(
            [i["score"] for i in answer["items"]], [i["score"] for i in alone["items"]], atol=1e-5
        )
    table = recommend(params, "--file", str(lines_file), "-k", "2").stdout.split("\n\n")
    assert [block.splitlines()[0] for block in table] == [f"Q2I for query {q!r}" for q in queries]


def test_a_jsonl_file_may_give_each_query_its_instruction(workspace, tmp_path):
    _, params = workspace
    rows = [{"input": "yoga mat"}, {"input": "yoga mat", "instruction": ""}]
    path = tmp_path / "queries.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = recommend(params, "--file", str(path), "-k", "2", "--json")
    assert result.exit_code == 0, result.output
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert (first["instruction"], second["instruction"]) == (INSTRUCTIONS["Q2I"], "")


# --- listing valid ids


def test_list_items_counts_the_catalogue_and_prints_the_first_ids_with_titles(workspace):
    cfg, params = workspace
    titles = catalogue_titles(cfg)
    result = recommend(params, "--list", "items", "--limit", "3")
    assert result.exit_code == 0, result.output
    heading, *rows = result.stdout.splitlines()
    assert heading == (
        f"{len(titles)} items in {cfg.paths.unified / CATALOGUE_FILE}; the first 3 (--limit N, "
        "0: all):"
    )
    assert [row.split()[0] for row in rows] == sorted(titles)[:3]
    assert all(row.endswith(titles[row.split()[0]]) for row in rows)


def test_list_users_gives_every_user_recommend_accepts(workspace):
    cfg, params = workspace
    histories = pq.read_table(cfg.paths.unified / SEQUENCES_FILE).to_pylist()
    result = recommend(params, "--list", "users", "--limit", "0", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert listed["count"] == listed["listed"] == len(histories)
    users = [user["id"] for user in listed["users"]]
    assert users == sorted(row["user_id"] for row in histories)
    sizes = {row["user_id"]: len(row["item_ids"]) for row in histories}
    assert all(
        user["history"] == f"{sizes[user['id']]} items in history" for user in listed["users"]
    )
    assert recommended(params, "--user", users[0], "-k", "1")["for"] == f"user {users[0]}"


def test_the_ids_in_docs_recommend_md_exist_in_the_bundled_sample(tmp_path, default_config):
    # the bundled sample, built as params.yaml builds it (what a fresh `make repro` has)
    data = write_sample(tmp_path / "data", default_config.sample)
    write_unified(data, default_config.build, tmp_path / "unified")
    unified = tmp_path / "unified"
    doc = (ROOT / "docs" / "recommend.md").read_text()
    commands = "\n".join(  # the command lines, without their comments
        line.split("#")[0] for line in doc.splitlines() if line.startswith("recfound recommend")
    )
    users = set(re.findall(r"--user (\S+)", commands))
    users |= set(re.findall(r'for_user\("([^"]+)"', doc))
    items = set(re.findall(r"--item (\S+)", commands))
    items |= set(re.findall(r'\["I2I", "([^"]+)"', doc))  # the server example's I2I row
    for history in re.findall(r'\["U2I", "([^"]+)"', doc):  # ids, or titles typed by hand
        items |= {line for line in history.split("\\n") if re.fullmatch(r"B0\w{8}", line)}
    assert users and items
    catalogue = set(read_catalogue(unified)["item_id"].to_pylist())
    histories = set(pq.read_table(unified / SEQUENCES_FILE)["user_id"].to_pylist())
    assert users <= histories, users - histories
    assert items <= catalogue, items - catalogue
