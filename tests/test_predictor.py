"""One Predictor: the CLI, evaluation, the served model and the catalogue index ask the model
the same way and get the same answers and vectors, long inputs included."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from test_inference_cli import scrambled_model
from test_recommend import params_file, random_adapter, with_paths
from typer.testing import CliRunner

from recfound.cli import app
from recfound.config import Config, load_config
from recfound.data.instructions import INSTRUCTIONS
from recfound.errors import RecFoundError
from recfound.evaluate.systems import LLMSystem
from recfound.merge.layout import merged_adapter_dir
from recfound.model.inference import TextInput
from recfound.model.predictor import (
    InputLimits,
    Predictor,
    choose_model,
    resolve_task,
)
from recfound.tasks import Kind, task_by_code
from recfound.tracking import pyfunc

ROOT = Path(__file__).resolve().parents[1]
# Long: thousands of tokens of the tiny tokenizer, over every training budget, and still under
# serve.max_input_chars so the served model takes it too.
LONG = " ".join(f"review {i} says the shoes fit well and the colour is true." for i in range(110))
SHORT = "blue socks"
INPUTS = [LONG, SHORT]
runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory, one_thread) -> tuple[Config, Path]:
    """(config, params.yaml): the scrambled tiny model and a random TMoLE adapter as the merged
    one (paths.merged), answers of at most 6 tokens."""
    root = tmp_path_factory.mktemp("predictor")
    model_dir = scrambled_model(tiny_model_dir, root / "model")
    cfg = load_config(ROOT / "params.yaml")
    raw = cfg.model_dump(by_alias=True)
    raw["model"]["tmole"]["task_embedding_dim"] = 16
    raw["evaluate"]["max_new_tokens"] = 6
    cfg = with_paths(
        Config.model_validate(raw),
        base_model=model_dir,
        merged=root / "merged",
        unified=root / "unified",
        index=root / "index",
    )
    random_adapter(model_dir, cfg.model, merged_adapter_dir(cfg), seed=3)
    assert len(LONG) < cfg.serve.max_input_chars
    return cfg, params_file(cfg, root / "params.yaml")


@pytest.fixture(scope="module")
def predictor(setup) -> Predictor:
    cfg, _ = setup
    return Predictor.load(cfg, cfg.paths.base_model, merged_adapter_dir(cfg), "cpu")


def cli(params: Path, *args: str) -> str:
    result = runner.invoke(app, [*args, "--params", str(params)])
    assert result.exit_code == 0, result.output
    return result.stdout


def served(cfg: Config, params: Path) -> pyfunc.RecFoundPyFunc:
    """The registered model's python half, loaded from the artifacts it is logged with."""
    model = pyfunc.RecFoundPyFunc()
    artifacts = {
        pyfunc.BASE_MODEL: str(cfg.paths.base_model),
        pyfunc.ADAPTER: str(merged_adapter_dir(cfg)),
        pyfunc.PARAMS: str(params),
    }
    model.load_context(SimpleNamespace(artifacts=artifacts))
    return model


def test_the_inputs_are_over_every_training_budget_and_under_them(predictor, setup) -> None:
    cfg, _ = setup
    tok = predictor.tokenizer
    assert len(tok(LONG)["input_ids"]) > 2 * cfg.train.max_len_prompt
    assert len(tok(SHORT)["input_ids"]) < cfg.train.max_len_passage


def test_cli_evaluation_served_model_and_index_generate_and_embed_alike(
    predictor, setup, tmp_path
) -> None:
    cfg, params = setup
    sr, u2i = task_by_code("SR"), task_by_code("U2I")
    instruction = INSTRUCTIONS["SR"]

    # the CLI (its default model: the merged one)
    generated = cli(params, "generate", "--task", "sr", *INPUTS)
    by_cli = [json.loads(line)["output"] for line in generated.splitlines()]
    queries, passages = tmp_path / "q.npy", tmp_path / "p.npy"
    cli(params, "embed", "--task", "U2I", *INPUTS, "--out", str(queries))
    cli(params, "embed", "--task", "U2I", "--instruction", "", *INPUTS, "--out", str(passages))
    cli_queries, cli_passages = np.load(queries), np.load(passages)

    # evaluation's system
    system = LLMSystem("recfound", predictor)
    rows = [{"id": str(i), "input": t, "instruction": instruction} for i, t in enumerate(INPUTS)]
    by_evaluation = system.generate(sr, rows)
    u2i_rows = [{**row, "instruction": INSTRUCTIONS["U2I"]} for row in rows]
    evaluation_queries = system.query_vectors(u2i, u2i_rows)
    evaluation_passages = system.embedder(u2i, progress=False)(INPUTS, "")

    # the served model
    model = served(cfg, params)
    frame = pd.DataFrame(
        {
            "task": ["SR", "SR", "U2I", "U2I", "U2I", "U2I"],
            "input": INPUTS * 3,
            "instruction": [None, None, None, None, "", ""],
        }
    )
    out = model.predict(None, frame)
    by_server = list(out["generation"][:2])
    server_queries = np.array(list(out["embedding"][2:4]), dtype=np.float32)
    server_passages = np.array(list(out["embedding"][4:6]), dtype=np.float32)

    # the index stage
    from recfound.index.stage import write_indexes

    catalogue = pa.table({"item_id": ["long", "short"], "passage": INPUTS})
    write_indexes(cfg, [u2i], catalogue, tmp_path / "index")
    index_passages = np.load(tmp_path / "index" / "U2I" / "vectors.npy")

    assert by_cli == by_evaluation == by_server
    assert by_cli[0] != by_cli[1]  # different prompts, different answers: order is checked
    for vectors in (evaluation_queries, server_queries):
        np.testing.assert_array_equal(vectors, cli_queries)
    for vectors in (evaluation_passages, server_passages, index_passages):
        np.testing.assert_array_equal(vectors, cli_passages)
    assert not np.allclose(cli_queries, cli_passages, atol=1e-3)


def test_long_inputs_are_cut_to_the_training_budgets(predictor, setup) -> None:
    cfg, _ = setup
    sr, u2i = task_by_code("SR"), task_by_code("U2I")
    prompts = predictor.prompts(sr, [TextInput(LONG), TextInput(SHORT)])
    assert [p.truncated for p in prompts.fitted] == [True, False]
    assert len(prompts.fitted[0].input_ids) <= cfg.train.max_len_prompt
    texts = predictor.texts(
        predictor.with_instructions(u2i, [TextInput(LONG), TextInput(LONG, ""), TextInput(SHORT)])
    )
    assert [len(e.input_ids) for e in texts.examples[:2]] == [
        cfg.train.max_len_query,
        cfg.train.max_len_passage,
    ]
    assert [e.truncated for e in texts.examples] == [True, True, False]
    limits = InputLimits.of(cfg.train)
    assert limits.embedding("an instruction")[0] == cfg.train.max_len_query
    assert limits.embedding("")[0] == cfg.train.max_len_passage


def test_a_cut_is_said_in_one_note_per_call(predictor) -> None:
    notes: list[str] = []
    predictor.notify = notes.append
    try:
        predictor.generate(task_by_code("SR"), [TextInput(LONG), TextInput(SHORT)])
        predictor.embed(task_by_code("Q2I"), [TextInput(LONG, ""), TextInput(SHORT, "")])
        predictor.embed(task_by_code("Q2I"), [TextInput(SHORT, "")])
    finally:
        predictor.notify = None
    assert notes == [
        "1 of 2 inputs cut to fit train.max_len_prompt=384 tokens (the start of each was dropped)",
        "1 of 2 inputs cut to train.max_len_passage=64 tokens (the end of each was dropped)",
    ]


def test_embeddings_are_unit_vectors_in_float32(predictor) -> None:
    vectors = predictor.embed(task_by_code("I2I"), [TextInput(SHORT), TextInput(LONG)])
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)


def test_task_codes_are_read_in_any_case_and_unknown_ones_refused() -> None:
    assert resolve_task("sa") is resolve_task("SA") is task_by_code("SA")
    with pytest.raises(RecFoundError, match="unknown task 'xx'"):
        resolve_task("xx")
    with pytest.raises(RecFoundError, match="U2I is embedding"):
        resolve_task("u2i", Kind.GENERATIVE)
    with pytest.raises(RecFoundError, match="AG is not one this model was trained on"):
        resolve_task("ag", task_codes=("SR", "U2I"))


def test_a_lower_case_task_gets_its_trained_instruction(setup) -> None:
    _, params = setup
    lower = json.loads(cli(params, "generate", "--task", "sa", SHORT))
    upper = json.loads(cli(params, "generate", "--task", "SA", SHORT))
    assert lower == upper
    assert lower["instruction"] == INSTRUCTIONS["SA"]


def test_the_cli_answers_with_the_merged_model_by_default_and_says_which(setup) -> None:
    cfg, params = setup
    merged = runner.invoke(app, ["embed", "--task", "I2I", SHORT, "--params", str(params)])
    base = runner.invoke(
        app, ["embed", "--task", "I2I", SHORT, "--base-only", "--params", str(params)]
    )
    assert merged.exit_code == base.exit_code == 0, merged.output + base.output
    assert f"model: merged {merged_adapter_dir(cfg)} (base {cfg.paths.base_model})" in (
        merged.stderr
    )
    assert f"model: base {cfg.paths.base_model}" in base.stderr
    merged_vector = json.loads(merged.stdout)["embedding"]
    assert not np.allclose(merged_vector, json.loads(base.stdout)["embedding"], atol=1e-4)


def test_the_model_choice_prefers_the_adapter_given_then_the_merged_one(tmp_path) -> None:
    base, merged = tmp_path / "base", tmp_path / "merged"
    assert choose_model(base, None, merged).adapter is None  # no merged model written yet
    merged.mkdir()
    assert choose_model(base, None, merged).describe() == f"merged {merged} (base {base})"
    assert choose_model(base, tmp_path / "a", merged).describe() == (
        f"adapter {tmp_path / 'a'} (base {base})"
    )
    assert choose_model(base, None, merged, base_only=True).describe() == f"base {base}"


def test_float32_decoding_merges_the_task_delta_and_answers_as_the_routed_model(
    predictor,
) -> None:
    from recfound.model.export import merged_task_layers

    assert predictor.merges_for_decoding
    sr = task_by_code("SR")
    lm = predictor.model.lm
    before = {name: p.detach().clone() for name, p in lm.named_parameters()}
    modules = dict(lm.named_modules())
    prompts = predictor.prompts(sr, [TextInput(LONG), TextInput(SHORT)])
    ids = torch.tensor([prompts.fitted[1].input_ids])
    with torch.no_grad(), predictor.model.routed(torch.tensor([sr.id])):
        routed = lm(ids).logits
    with torch.no_grad(), merged_task_layers(lm, predictor.model.adapter, sr.id):
        merged = lm(ids).logits
        assert not any("lora" in name for name, _ in lm.named_parameters())
    torch.testing.assert_close(merged, routed, rtol=1e-4, atol=1e-5)
    # the adapter is back, every weight bit for bit
    assert dict(lm.named_modules()).keys() == modules.keys()
    for name, param in lm.named_parameters():
        assert torch.equal(param, before[name]), name

    merged_answers = predictor.decode(prompts)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Predictor, "merges_for_decoding", property(lambda self: False))
        routed_answers = predictor.decode(prompts)
    assert merged_answers == routed_answers


def test_bfloat16_decodes_routed(setup) -> None:
    cfg, _ = setup
    raw = cfg.model_dump(by_alias=True)
    raw["model"]["dtype"] = "bfloat16"
    bf16 = Predictor.load(
        Config.model_validate(raw), cfg.paths.base_model, merged_adapter_dir(cfg), "cpu"
    )
    assert not bf16.merges_for_decoding
    base_only = Predictor.load(cfg, cfg.paths.base_model, None, "cpu")
    assert not base_only.merges_for_decoding
