"""The registered model served by `mlflow models serve`: retrieval beside generation and
embedding, and a 400 with a message for every request it cannot answer.

One model for the module: the tiny Llama with a random merged adapter, the sample built, the
index stage run over its catalogue, then the `evaluate` stage run registers it (with the index
and catalogue as artifacts) and `mlflow models serve` serves it on 127.0.0.1.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from repo_helpers import write_yaml
from test_build import BUILD, SAMPLE
from test_recommend import random_adapter
from test_tracking import make_repo, tracked_config

from recfound.config import Config, ServeConfig
from recfound.data.build import write_unified
from recfound.data.catalogue import read_catalogue
from recfound.data.sample import write_sample
from recfound.index import stage as index_stage
from recfound.index.recommend import Recommender, text_query, user_query
from recfound.tracking.mlflow_run import stage_run
from recfound.tracking.serving import Served, post_json, serve_model

LIMITS = ServeConfig(max_k=20, max_input_chars=400, max_rows=6)


def frame(*rows: list[Any], columns: tuple[str, ...] = ("task", "input", "k")) -> dict:
    """A request body: `rows` as a dataframe_split with `columns`."""
    return {"dataframe_split": {"columns": list(columns), "data": [list(r) for r in rows]}}


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, one_thread):
    """(config, catalogue ids -> titles, the running server) of the registered model."""
    root = make_repo(tmp_path_factory.mktemp("served") / "repo")
    tracking_dir = tmp_path_factory.mktemp("served-mlflow")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        base = tracked_config(tracking_dir, "served")
        raw = base.model_dump(by_alias=True)
        raw["build"] = BUILD.model_dump()
        raw["model"]["tmole"]["task_embedding_dim"] = 16
        raw["paths"]["base_model"] = tiny_model_dir
        raw["evaluate"]["max_new_tokens"] = 4
        raw["serve"] = LIMITS.model_dump()
        cfg = Config.model_validate(raw)
        write_yaml(Path("params.yaml"), cfg.model_dump(by_alias=True, mode="json"))
        write_unified(write_sample(root / "data", SAMPLE), BUILD, cfg.paths.unified)
        random_adapter(tiny_model_dir, cfg.model, index_stage.merged_adapter_dir(cfg), seed=1)
        index_stage.run(cfg)
        with stage_run(cfg, "evaluate"):
            cfg.paths.reports.mkdir(parents=True, exist_ok=True)
            (cfg.paths.reports / "metrics.json").write_text("{}")
        table = read_catalogue(cfg.paths.unified)
        titles = dict(zip(table["item_id"].to_pylist(), table["title"].to_pylist(), strict=True))
        model_uri = f"models:/{cfg.tracking.registered_model}/1"
        with serve_model(model_uri, {"MLFLOW_TRACKING_URI": cfg.tracking.uri}) as server:
            yield cfg, titles, server
    finally:
        os.chdir(cwd)


def predictions(server: Served, body: dict) -> list[dict]:
    status, answer = post_json(server.invocations, body)
    assert status == 200, answer
    return answer["predictions"]


def assert_ranked(row: dict, k: int, titles: dict[str, str]) -> None:
    """k distinct catalogue items, scores best first, each with its catalogue title."""
    assert len(row["items"]) == len(set(row["items"])) == len(row["scores"]) == k
    assert row["scores"] == sorted(row["scores"], reverse=True)
    assert all(-1.0 - 1e-5 <= s <= 1.0 + 1e-5 for s in row["scores"])
    assert row["titles"] == [titles[item] for item in row["items"]]
    assert row["generation"] is None and row["embedding"] is None


def test_one_request_mixes_retrieval_embedding_and_generation(served) -> None:
    cfg, titles, server = served
    ids = sorted(titles)
    body = frame(
        ["Q2I", "wireless earbuds", 5],
        ["I2I", ids[0], 3],
        ["U2I", f"{ids[1]}\n{ids[2]}", 4],
        ["U2I", f"{titles[ids[1]]}\n{titles[ids[2]]}", 2],
        ["Q2I", "wireless earbuds", None],
        ["SA", "Great shirt, fits well.", None],
    )
    q2i, i2i, u2i_ids, u2i_titles, embedding, generation = predictions(server, body)
    assert_ranked(q2i, 5, titles)
    assert_ranked(i2i, 3, titles)
    assert ids[0] not in i2i["items"]  # the item asked about is never its own neighbour
    assert_ranked(u2i_ids, 4, titles)
    assert not {ids[1], ids[2]} & set(u2i_ids["items"])  # a history of ids: those left out
    assert_ranked(u2i_titles, 2, titles)
    # the columns a row does not answer are JSON null, never NaN
    assert embedding["items"] is embedding["scores"] is embedding["titles"] is None
    assert embedding["generation"] is None
    assert np.isclose(np.linalg.norm(embedding["embedding"]), 1.0, atol=1e-4)
    assert isinstance(generation["generation"], str) and generation["embedding"] is None
    assert generation["items"] is None


def test_served_retrieval_answers_as_the_recommend_library(served) -> None:
    """Each input kind becomes the Query `recfound recommend` asks, exclusions included."""
    cfg, titles, server = served
    ids = sorted(titles)
    recommender = Recommender(cfg)
    history = [ids[3], ids[4], ids[5]]
    asked = {
        ("Q2I", "stainless steel pan"): text_query("stainless steel pan"),
        ("I2I", ids[6]): recommender.for_item(ids[6]),
        ("U2I", "\n".join(history)): user_query(
            recommender.catalogue, "-", history, cfg.build.max_history, seen=False
        ),
        ("U2I", "Trail shoes\nMerino socks"): recommender.for_history(
            ["Trail shoes", "Merino socks"]
        ),
    }
    rows = predictions(server, frame(*[[task, text, 6] for task, text in asked]))
    for row, query in zip(rows, asked.values(), strict=True):
        expected = recommender.recommend(query, 6).items
        assert row["items"] == [r.item_id for r in expected], query
        assert np.allclose(row["scores"], [r.score for r in expected], atol=1e-5), query


LONG_INPUT = "x" * (LIMITS.max_input_chars + 1)
# Each request the model refuses, and a phrase its message must hold.
BAD_REQUESTS = [
    pytest.param(frame(["NOPE", "x", None]), "row 0: unknown task 'NOPE'", id="unknown task"),
    pytest.param(
        frame(["Q2I", "q", 0]), "k must be between 1 and serve.max_k = 20, got 0", id="k 0"
    ),
    pytest.param(frame(["Q2I", "q", 21]), "serve.max_k = 20, got 21", id="k over the max"),
    pytest.param(frame(["Q2I", "q", -3]), "serve.max_k = 20, got -3", id="k negative"),
    pytest.param(frame(["Q2I", "q", 2.5]), "k must be a whole number, got 2.5", id="k fraction"),
    pytest.param(frame(["Q2I", "q", "ten"]), "k must be a whole number, got 'ten'", id="k text"),
    pytest.param(frame(["SA", "fine", 3]), "row 0: k asks for retrieval", id="k generative"),
    pytest.param(frame(["Q2I", "  ", 3]), "row 0: input is empty", id="blank input"),
    pytest.param(frame(["SA", None, None]), "row 0: input is empty", id="null input"),
    pytest.param(frame(["Q2I", LONG_INPUT, 3]), "401 characters, more than", id="long input"),
    pytest.param(frame(["I2I", "no-such-item", 3]), "unknown item id 'no-such-item'", id="item"),
    pytest.param(
        frame(*[["Q2I", "q", None]] * 7), "7 rows, more than serve.max_rows = 6", id="rows"
    ),
    pytest.param(frame(["Q2I", "q", 3], ["Q2I", "q", 0]), "row 1: k must be", id="second row"),
    pytest.param(frame(["Q2I"], columns=("task",)), "missing inputs ['input']", id="no input"),
]


@pytest.mark.parametrize(("body", "phrase"), BAD_REQUESTS)
def test_a_bad_request_gets_400_with_a_message_and_the_server_answers_on(
    served, body: dict, phrase: str
) -> None:
    _, _, server = served
    status, answer = post_json(server.invocations, body)
    assert status == 400, answer
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert phrase in answer["message"], answer["message"]
    (row,) = predictions(server, frame(["Q2I", "q", 1]))
    assert len(row["items"]) == 1


def test_the_logged_index_leaves_the_vectors_files_out(served) -> None:
    import mlflow

    from recfound.index.store import INDEX_FILE, VECTORS_FILE

    cfg, _, _ = served
    mlflow.set_tracking_uri(cfg.tracking.uri)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{cfg.tracking.registered_model}/1"))
    logged = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    tasks = index_stage.indexed_tasks(cfg.paths.index)
    assert tasks and {f"artifacts/index/{code}/{INDEX_FILE}" for code in tasks} <= logged
    assert not [path for path in logged if path.endswith(VECTORS_FILE)]
    assert "artifacts/catalogue.parquet" in logged


def test_requests_in_flight_together_get_the_answers_they_get_alone(served) -> None:
    """The server answers on threads; each request's task routing stays its own."""
    _, titles, server = served
    ids = sorted(titles)
    bodies = [
        frame(["Q2I", "wireless earbuds", 5]),
        frame(["I2I", ids[7], 5]),
        frame(["U2I", f"{ids[8]}\n{ids[9]}", 5]),
        frame(["SA", "Great shirt, fits well.", None]),
    ]
    alone = [predictions(server, body) for body in bodies]
    together: list[tuple[int, int, Any]] = []

    def client(offset: int) -> None:
        for n in range(12):
            which = (offset + n) % len(bodies)
            together.append((which, *post_json(server.invocations, bodies[which])))

    threads = [threading.Thread(target=client, args=(offset,)) for offset in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(together) == 72
    for which, status, answer in together:
        assert status == 200, answer
        assert answer["predictions"] == alone[which]
