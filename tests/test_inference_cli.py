"""Batched inference and `recfound generate` / `recfound embed` on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from recfound.cli import app
from recfound.config import ModelConfig, load_config
from recfound.data.instructions import INSTRUCTIONS, instruction_for, trained_instructions
from recfound.data.unified import BUILD_MANIFEST
from recfound.model import prompts as P
from recfound.model.inference import TextInput, generate_batch, load_recfound
from recfound.model.predictor import Predictor
from recfound.tasks import task_by_code

ROOT = Path(__file__).resolve().parents[1]
PARAMS = str(ROOT / "params.yaml")
runner = CliRunner()


def scrambled_model(tiny_model_dir: Path, out: Path) -> Path:
    """The tiny model with larger random weights, so that greedy decoding varies by prompt.

    (The stock tiny model's tied embeddings make it repeat its last input token.)
    """
    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in lm.model.layers.parameters():
            if param.dim() == 2:
                param.normal_(std=0.3)
    lm.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return scrambled_model(tiny_model_dir, tmp_path_factory.mktemp("scrambled"))


@pytest.fixture(scope="module", params=["tmole", "lora"])
def adapter_dir(request, model_dir, tmp_path_factory) -> Path:
    """A saved adapter of each kind whose weights are not the identity."""
    from recfound.model.adapters import attach_adapter

    lm = AutoModelForCausalLM.from_pretrained(model_dir)
    adapter = attach_adapter(lm, ModelConfig(adapter=request.param))
    torch.manual_seed(1)
    with torch.no_grad():
        for param in adapter.trainable_parameters():
            param.normal_(std=0.3)
    out = tmp_path_factory.mktemp(f"adapter-{request.param}") / "adapter"
    adapter.save(out)
    return out


def library_vectors(
    model_dir: Path, adapter_dir: Path | None, texts: list[str], instruction: str, task: str
) -> np.ndarray:
    """What the library's Predictor answers for these texts: the CLI's reference."""
    predictor = Predictor.load(load_config(PARAMS), model_dir, adapter_dir, "cpu")
    requests = [TextInput(text, instruction) for text in texts]
    return predictor.embed(task_by_code(task), requests)


def invoke(*args: str, params: str | Path = PARAMS):
    return runner.invoke(app, [*args, "--params", str(params)])


def params_with_build(tmp_path: Path, instructions: dict[str, str] | None) -> Path:
    """params.yaml whose paths.unified is a build holding these trained `instructions` in its
    build.json (None: no build there at all)."""
    doc = yaml.safe_load(Path(PARAMS).read_text())
    unified = tmp_path / "unified"
    doc["paths"]["unified"] = str(unified)
    if instructions is not None:
        unified.mkdir()
        (unified / BUILD_MANIFEST).write_text(json.dumps({"instructions": instructions}))
    out = tmp_path / "params.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_batched_left_padded_generation_equals_one_prompt_at_a_time(model_dir):
    model, tok = load_recfound(model_dir, device="cpu")
    prompts = [
        P.generation_prompt(tok, "Answer", text)
        for text in ["hi", "the user bought a red cotton shirt from Acme", "blue socks"]
    ]
    batched = generate_batch(model, tok, prompts, 4, max_new_tokens=8, batch_size=3)
    one_by_one = [generate_batch(model, tok, [p], 4, 8, 1)[0] for p in prompts]
    assert batched == one_by_one
    assert len(set(batched)) == 3  # different prompts, different answers: order is checked


def test_generate_prints_one_json_line_per_input_in_input_order(
    model_dir, default_config, tmp_path
):
    params = params_with_build(tmp_path, None)
    result = invoke(
        "generate", "--model", str(model_dir), "--task", "SR", "first", "second one", params=params
    )
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    assert [r["input"] for r in rows] == ["first", "second one"]
    # no instruction given and no build to say what SR trained with: SR's standard instruction
    assert [r["instruction"] for r in rows] == [INSTRUCTIONS["SR"]] * 2
    model, tok = load_recfound(model_dir, device="cpu")
    prompts = [P.generation_prompt(tok, INSTRUCTIONS["SR"], t) for t in ("first", "second one")]
    expected = generate_batch(
        model, tok, prompts, 4, default_config.evaluate.max_new_tokens, batch_size=2
    )
    assert [r["output"] for r in rows] == expected


def test_generate_reads_a_jsonl_file_and_writes_the_answers_to_out(model_dir, tmp_path):
    requests = [
        {"instruction": "Rate the review", "input": "great quality"},
        {"input": "no instruction here"},
        {"instruction": "", "input": "explicitly none"},
    ]
    params = params_with_build(tmp_path, {"SA": "How many stars? A letter only."})
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in requests))
    out = tmp_path / "answers.jsonl"
    result = invoke(
        "generate",
        "--model",
        str(model_dir),
        "--task",
        "SA",
        "--file",
        str(source),
        "--out",
        str(out),
        params=params,
    )
    assert result.exit_code == 0, result.output
    rows = jsonl(out.read_text())
    # the row without one gets the instruction SA was trained with (the build's build.json)
    assert [(r["instruction"], r["input"]) for r in rows] == [
        ("Rate the review", "great quality"),
        ("How many stars? A letter only.", "no instruction here"),
        ("", "explicitly none"),
    ]
    assert all(isinstance(r["output"], str) for r in rows)
    assert str(out) in result.output


def test_embed_writes_an_npy_of_unit_vectors_equal_to_the_library_embeddings(model_dir, tmp_path):
    out = tmp_path / "vectors.npy"
    texts = ["red cotton shirt", "blue running shoes for trail"]
    result = invoke(
        "embed", "--model", str(model_dir), "--task", "Q2I", "--instruction", "Find the product",
        *texts, "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    vectors = np.load(out)
    expected = library_vectors(model_dir, None, texts, "Find the product", "Q2I")
    hidden = AutoModelForCausalLM.from_pretrained(model_dir).config.hidden_size
    assert vectors.shape == (2, hidden)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(vectors, expected)


def test_embed_prints_jsonl_vectors_by_default(model_dir):
    result = invoke("embed", "--model", str(model_dir), "--task", "I2I", "a hat")
    assert result.exit_code == 0, result.output
    [row] = jsonl(result.stdout)
    assert row["input"] == "a hat"
    assert np.linalg.norm(row["embedding"]) == pytest.approx(1.0, rel=1e-5)


def test_an_adapter_routes_inference_through_its_weights(model_dir, adapter_dir, tmp_path):
    base_out, adapted_out = tmp_path / "base.npy", tmp_path / "adapted.npy"
    args = ["embed", "--model", str(model_dir), "--task", "U2I", "shoes, socks, jacket"]
    params = params_with_build(tmp_path, None)
    assert invoke(*args, "--out", str(base_out), params=params).exit_code == 0
    result = invoke(*args, "--adapter", str(adapter_dir), "--out", str(adapted_out), params=params)
    assert result.exit_code == 0, result.output
    assert not np.allclose(np.load(base_out), np.load(adapted_out), atol=1e-4)

    query = ["shoes, socks, jacket"]
    expected = library_vectors(model_dir, adapter_dir, query, INSTRUCTIONS["U2I"], "U2I")
    np.testing.assert_array_equal(np.load(adapted_out), expected)
    assert f"model: adapter {adapter_dir}" in result.stderr

    generated = invoke(
        "generate", "--model", str(model_dir), "--adapter", str(adapter_dir), "--task", "PM", "x"
    )
    assert generated.exit_code == 0, generated.output


def test_a_task_of_the_wrong_kind_is_refused(model_dir):
    result = invoke("generate", "--model", str(model_dir), "--task", "U2I", "text")
    assert result.exit_code == 1
    assert "U2I is embedding" in result.output
    result = invoke("embed", "--model", str(model_dir), "--task", "SR", "text")
    assert result.exit_code == 1
    assert "SR is generative" in result.output


def test_a_bad_jsonl_line_is_named_by_file_and_line(model_dir, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"input": "fine"}\n{"instruction": "no input"}\n')
    result = invoke("generate", "--model", str(model_dir), "--task", "SR", "--file", str(source))
    assert result.exit_code == 1
    assert f"{source}:2" in result.output
    assert '"input"' in result.output


def test_a_missing_model_directory_points_to_the_base_model_stage(tmp_path):
    result = invoke("generate", "--model", str(tmp_path / "nothing"), "--task", "SR", "x")
    assert result.exit_code == 1
    assert "recfound stage base_model" in result.output


def test_inputs_must_come_from_arguments_or_a_file_not_both(model_dir, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("one\n")
    both = invoke("embed", "--model", str(model_dir), "--task", "U2I", "x", "--file", str(source))
    neither = invoke("embed", "--model", str(model_dir), "--task", "U2I")
    assert both.exit_code == neither.exit_code == 2


# --- bad input, taken calmly ----------------------------------------------------------------------

# A megabyte of review text: the size that once ran for minutes as one prompt.
LONG = "".join(f"review {i} says the shoes fit well. " for i in range(30_000)) + "Which size?"


@pytest.fixture()
def model_input_lengths(monkeypatch) -> list[int]:
    """The sequence length of every batch the model is given (generate and embed)."""
    from recfound.model.unified import RecFoundModel

    lengths: list[int] = []
    for name in ("generate", "embed"):
        original = getattr(RecFoundModel, name)

        def spy(self, input_ids, *args, original=original, **kwargs):
            lengths.append(input_ids.shape[1])
            return original(self, input_ids, *args, **kwargs)

        monkeypatch.setattr(RecFoundModel, name, spy)
    return lengths


def test_a_megabyte_prompt_is_cut_to_the_training_budget_and_said_once(
    model_dir, default_config, model_input_lengths
):
    assert len(LONG) > 1_000_000
    result = invoke("generate", "--model", str(model_dir), "--task", "SR", LONG, "short one")
    assert result.exit_code == 0, result.output
    budget = default_config.train.max_len_prompt
    assert model_input_lengths and max(model_input_lengths) <= budget
    notes = [line for line in result.stderr.splitlines() if "cut" in line]
    assert notes == [
        f"note: 1 of 2 inputs cut to fit train.max_len_prompt={budget} tokens "
        "(the start of each was dropped)"
    ]
    rows = jsonl(result.stdout)
    assert [r["input"] for r in rows] == [LONG, "short one"]  # the answer names the whole input


def test_the_cut_prompt_keeps_template_instruction_and_the_end_of_the_input(model_dir):
    from recfound.model.inference import load_recfound

    _, tok = load_recfound(model_dir, device="cpu")
    fitted = P.fit_prompt(tok, "Answer the question", LONG, 384)
    assert 384 - 8 <= len(fitted.input_ids) <= 384
    assert fitted.text.startswith("<|im_start|>user\nAnswer the question\n\n")
    assert fitted.text.endswith("Which size?<|im_end|>\n<|im_start|>assistant\n")


def test_a_megabyte_text_to_embed_is_cut_to_the_training_length_before_the_model(
    model_dir, default_config, model_input_lengths
):
    # I2I's trained instruction makes these queries: cut to train.max_len_query, as in training
    result = invoke("embed", "--model", str(model_dir), "--task", "I2I", LONG, "a hat")
    assert result.exit_code == 0, result.output
    limit = default_config.train.max_len_query
    assert model_input_lengths and max(model_input_lengths) == limit
    assert (
        f"note: 1 of 2 inputs cut to train.max_len_query={limit} tokens "
        "(the end of each was dropped)"
    ) in result.stderr
    rows = jsonl(result.stdout)
    assert [r["input"] for r in rows] == [LONG, "a hat"]
    assert np.linalg.norm(rows[0]["embedding"]) == pytest.approx(1.0, rel=1e-5)


def test_a_passage_to_embed_is_cut_to_the_passage_length(
    model_dir, default_config, model_input_lengths
):
    result = invoke("embed", "--model", str(model_dir), "--task", "I2I", "--instruction", "", LONG)
    assert result.exit_code == 0, result.output
    limit = default_config.train.max_len_passage
    assert max(model_input_lengths) == limit
    assert f"note: 1 of 1 inputs cut to train.max_len_passage={limit} tokens" in result.stderr


def test_a_megabyte_text_is_tokenised_only_as_far_as_the_budget_reaches(model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    seen: list[int] = []
    original = type(tok).__call__

    def spy(self, text, *args, **kwargs):
        seen.append(len(text))
        return original(self, text, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(tok), "__call__", spy)
        cut = P.encode_embedding(tok, "Find it", LONG, 96)
    whole = P.encode_embedding(tok, "Find it", LONG[:20_000], 96)
    assert max(seen) < 10_000  # of a 1 MB text
    assert cut == whole and cut.truncated and len(cut.input_ids) == 96


def test_inputs_that_fit_are_not_reported_as_cut(model_dir):
    for command, task in (("generate", "SR"), ("embed", "I2I")):
        result = invoke(command, "--model", str(model_dir), "--task", task, "a hat")
        assert result.exit_code == 0, result.output
        assert "note:" not in result.stderr


def test_an_instruction_over_the_prompt_budget_is_a_one_line_error(model_dir):
    instruction = "Answer carefully. " * 400
    result = invoke(
        "generate", "--model", str(model_dir), "--task", "SR", "--instruction", instruction, "x"
    )
    assert result.exit_code == 1
    [error] = [line for line in result.stderr.splitlines() if "error" in line]
    assert error.startswith("error: input 1: its instruction alone makes a ")
    assert "train.max_len_prompt=" in error
    assert "Traceback" not in result.output


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


EMPTY_INPUTS = {
    "no texts": (lambda tmp: [], 2, "no input: give input texts or --file"),
    "an empty string": (lambda tmp: [""], 1, "input argument 1 is empty"),
    "a blank string among texts": (lambda tmp: ["shoes", "  "], 1, "input argument 2 is empty"),
    "an empty file": (
        lambda tmp: ["--file", str(write(tmp / "empty.txt", ""))],
        1,
        "empty.txt: file is empty",
    ),
    "a file of blank lines": (
        lambda tmp: ["--file", str(write(tmp / "blank.txt", "\n  \n\n"))],
        1,
        "blank.txt: file holds no inputs (only blank lines)",
    ),
    "an empty jsonl file": (
        lambda tmp: ["--file", str(write(tmp / "empty.jsonl", ""))],
        1,
        "empty.jsonl: file is empty",
    ),
    "a jsonl file of blank lines": (
        lambda tmp: ["--file", str(write(tmp / "blank.jsonl", "\n\n"))],
        1,
        "blank.jsonl: file holds no records (only blank lines)",
    ),
    "a jsonl row with an empty input": (
        lambda tmp: ["--file", str(write(tmp / "rows.jsonl", '{"input": "a"}\n{"input": " "}\n'))],
        1,
        'rows.jsonl:2: "input" is empty',
    ),
}


@pytest.mark.parametrize("command,task", [("generate", "SR"), ("embed", "Q2I")])
@pytest.mark.parametrize("case", list(EMPTY_INPUTS))
def test_empty_input_is_a_one_line_error_naming_the_input(model_dir, tmp_path, command, task, case):
    arguments, exit_code, message = EMPTY_INPUTS[case]
    result = invoke(command, "--model", str(model_dir), "--task", task, *arguments(tmp_path))
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)  # an exit, not an uncaught error
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1  # one line
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_the_trained_instruction_is_that_of_the_source_with_most_training_rows():
    rows = {
        "SR": {"amazon_reviews": {"train": 10}, "movielens": {"train": 30}},
        "QR": {"esci": {"train": 5}},
    }
    trained = trained_instructions(rows)
    assert trained["SR"] == instruction_for("SR", "movielens")
    assert trained["QR"] == INSTRUCTIONS["QR"]


def test_the_top_level_help_speaks_to_users_not_developers():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "RecFound: train, evaluate and use one LLM" in result.output
    assert "imported inside each command" not in result.output  # the module's developer note
