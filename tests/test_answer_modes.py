"""Answers decided among a row's options: the Predictor's option scores are the teacher-forced
log-likelihood of the answer as trained, whatever the batching; the modes pick the option the
scores (or, for SR, the embedding) put first."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from test_predictor import setup  # noqa: F401  (the module's fixture: tiny model + TMoLE)

from recfound.config import Config
from recfound.data.instructions import INSTRUCTIONS, instruction_for
from recfound.evaluate.answer_modes import (
    ModeSystem,
    listed_texts,
    mode_system_name,
    split_mode_name,
)
from recfound.evaluate.systems import LLMSystem
from recfound.merge.layout import merged_adapter_dir
from recfound.model import prompts as fmt
from recfound.model.inference import TextInput
from recfound.model.predictor import Predictor
from recfound.tasks import task_by_code

SA = task_by_code("SA")
SR = task_by_code("SR")
SA_INPUT = "Title: trail shoes\nReview: comfortable from the first day\nOptions: " + ", ".join(
    f"{letter}. {n} star{'s' if n > 1 else ''}" for n, letter in enumerate("ABCDE", start=1)
)
REQUESTS = [
    TextInput(SA_INPUT),
    TextInput("Title: kettle\nReview: it leaked after a week, sent it back"),
    TextInput("Title: socks\nReview: fine"),
]
LABELS = [["A", "B", "C", "D", "E"], ["A", "E"], ["yes", "no", "C"]]


@pytest.fixture(scope="module")
def routed(setup) -> Predictor:  # noqa: F811
    cfg, _ = setup
    return Predictor.load(cfg, cfg.paths.base_model, merged_adapter_dir(cfg), "cpu")


@pytest.fixture(scope="module")
def base(setup) -> Predictor:  # noqa: F811
    cfg, _ = setup
    return Predictor.load(cfg, cfg.paths.base_model, None, "cpu")


def teacher_forced(predictor: Predictor, request: TextInput, option: str) -> float:
    """Σ log p(response token) from one plain forward of prompt + response, routed to SA (no
    merge, no batch, no padding): what score_options must equal."""
    (asked,) = predictor.with_instructions(SA, [request])
    prompt = predictor.prompts(SA, [asked]).fitted[0].input_ids
    tok = predictor.tokenizer
    response = fmt.token_ids(tok, fmt.response_text(tok, asked.instruction, asked.input, option))
    ids = torch.tensor([prompt + response])
    with torch.no_grad(), predictor.model.routed(torch.tensor([SA.id])):
        logits = predictor.model.lm(ids).logits[0].double()
    log_probs = torch.log_softmax(logits, dim=-1)
    positions = range(len(prompt) - 1, len(prompt) + len(response) - 1)
    return float(sum(log_probs[t, ids[0, t + 1]] for t in positions))


@pytest.mark.parametrize("which", ["routed", "base"])
def test_option_scores_are_the_teacher_forced_log_likelihood_of_each_answer(
    which: str, request: pytest.FixtureRequest
) -> None:
    predictor = request.getfixturevalue(which)
    if which == "routed":
        assert predictor.merges_for_decoding  # scored merged, checked against the routed model
    scores = predictor.score_options(SA, REQUESTS, LABELS)
    assert [len(s) for s in scores] == [len(labels) for labels in LABELS]
    for request_, labels, row in zip(REQUESTS, LABELS, scores, strict=True):
        expected = [teacher_forced(predictor, request_, label) for label in labels]
        np.testing.assert_allclose(row, expected, rtol=1e-4, atol=1e-4)
    assert len(set(np.round(scores[0], 4))) > 1  # the options are told apart


def test_batching_padding_and_order_do_not_change_the_scores(routed: Predictor) -> None:
    together = routed.score_options(SA, REQUESTS, LABELS)
    batch_size = routed.batch_size
    try:
        routed.batch_size = 1
        alone = [
            routed.score_options(SA, [r], [o])[0] for r, o in zip(REQUESTS, LABELS, strict=True)
        ]
    finally:
        routed.batch_size = batch_size
    reversed_ = routed.score_options(SA, REQUESTS[::-1], LABELS[::-1])[::-1]
    for a, b, c in zip(together, alone, reversed_, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)


def test_per_token_scores_are_the_sums_over_the_response_tokens(routed: Predictor) -> None:
    texts = [["1 star", "5 stars, a customer favourite without a doubt"]]
    sums = routed.score_options(SA, REQUESTS[:1], texts)[0]
    means = routed.score_options(SA, REQUESTS[:1], texts, per_token=True)[0]
    tok = routed.tokenizer
    (asked,) = routed.with_instructions(SA, REQUESTS[:1])
    counts = [
        len(fmt.token_ids(tok, fmt.response_text(tok, asked.instruction, asked.input, t)))
        for t in texts[0]
    ]
    np.testing.assert_allclose(means, sums / np.array(counts), rtol=1e-6)
    assert counts[0] < counts[1]


def test_a_request_without_options_is_refused(routed: Predictor) -> None:
    with pytest.raises(Exception, match="input 2: no options"):
        routed.score_options(SA, REQUESTS[:2], [["A"], []])


def test_options_mode_answers_the_likeliest_label_and_texts_mode_the_likeliest_text(
    routed: Predictor,
) -> None:
    rows = [
        {"input": SA_INPUT, "instruction": INSTRUCTIONS["SA"], "options": list("ABCDE")},
        {"input": "Review: no options listed", "instruction": "", "options": list("ABCDE")},
    ]
    system = LLMSystem("recfound", routed)
    labels = ModeSystem(system, "options").generate(SA, rows)
    by_label = routed.score_options(
        SA, [TextInput(r["input"], r["instruction"]) for r in rows], [r["options"] for r in rows]
    )
    assert labels == ["ABCDE"[int(np.argmax(s))] for s in by_label]
    texts = ModeSystem(system, "option_text").generate(SA, rows)
    (by_text,) = routed.score_options(
        SA,
        [TextInput(SA_INPUT, INSTRUCTIONS["SA"])],
        [listed_texts(SA_INPUT, "ABCDE")],
        per_token=True,
    )
    assert texts == ["ABCDE"[int(np.argmax(by_text))], ""]  # "": its texts are not listed


class WordEmbedder:
    """A stand-in predictor whose vectors are bags of words: a history and a candidate share
    a direction exactly when they share words. Records what it was asked."""

    task_codes = None

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[TextInput]]] = []

    def embed(self, task, requests: Sequence[TextInput], progress: bool = False) -> np.ndarray:
        self.calls.append((task.code, list(requests)))
        vectors = np.zeros((len(requests), 64))
        for i, request in enumerate(requests):
            for word in re.findall(r"[a-z]+", request.input.casefold()):
                vectors[i, zlib.crc32(word.encode()) % 64] += 1
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def sr_row(history: str, titles: list[str], source: str) -> dict:
    letters = [chr(ord("A") + i) for i in range(len(titles))]
    listed = "\n".join(f"{letter}. {title}" for letter, title in zip(letters, titles, strict=True))
    return {
        "input": f"History:\n1. {history}\nCandidates:\n{listed}",
        "instruction": "SR instruction",
        "options": letters,
        "option_ids": [title.replace(" ", "-") for title in titles],
        "source": source,
    }


def test_the_embedding_mode_picks_the_candidate_the_history_is_about() -> None:
    titles = ["garden hose", "oak desk", "glass vase", "trail running shoes", "tea pot"]
    rows = [
        sr_row("trail running shoes", titles, "amazon_reviews"),  # D
        sr_row("vase of glass", titles[::-1], "movielens"),  # reversed: glass vase is C
        {**sr_row("tea pot", titles, "amazon_reviews"), "input": "no history here"},
    ]
    embedder = WordEmbedder()
    system = LLMSystem("recfound", embedder)  # type: ignore[arg-type]
    # one candidate's catalogue passage stands in for its title; the others have none
    passages = {"trail-running-shoes": "trail running shoes, brand Peakline"}
    answers = ModeSystem(system, "embedding", passages).generate(SR, rows)
    assert answers == ["D", "C", ""]
    (q_task, queries), (p_task, items) = embedder.calls
    assert q_task == p_task == "U2I"
    assert [q.instruction for q in queries] == [
        instruction_for("U2I", "amazon_reviews"),
        instruction_for("U2I", "movielens"),
    ]
    assert [q.input for q in queries] == ["1. trail running shoes", "1. vase of glass"]
    assert {i.instruction for i in items} == {""}
    assert "trail running shoes, brand Peakline" in {i.input for i in items}
    assert "trail running shoes" not in {i.input for i in items}


def test_the_embedding_mode_needs_u2i_in_the_task_set() -> None:
    embedder = WordEmbedder()
    embedder.task_codes = ("SR", "SA")
    mode = ModeSystem(LLMSystem("recfound", embedder), "embedding")  # type: ignore[arg-type]
    assert not mode.supports(SR)
    assert ModeSystem(LLMSystem("r", WordEmbedder()), "option_text").supports(SR)  # type: ignore[arg-type]
    assert not ModeSystem(LLMSystem("r", WordEmbedder()), "option_text").supports(  # type: ignore[arg-type]
        task_by_code("AP")
    )


def test_listed_texts_read_lines_and_comma_lists_and_refuse_a_missing_label() -> None:
    assert listed_texts(SA_INPUT, "ABCDE") == ["1 star", "2 stars", "3 stars", "4 stars", "5 stars"]
    prp = "Product 1: a\nProduct 2: b\nOptions:\nA. complements: x\nB. substitutes, y\nC. unrelated"
    assert listed_texts(prp, "ABC") == ["complements: x", "substitutes, y", "unrelated"]
    sr = "History:\n1. A. Milne box set\nCandidates:\nA. tent\nB. stove"
    assert listed_texts(sr, "AB") == ["tent", "stove"]
    assert listed_texts("Candidates:\nA. tent\nC. stove", "ABC") is None


def test_mode_names_round_trip_and_free_is_required(default_config: Config) -> None:
    assert split_mode_name(mode_system_name("base", "options")) == ("base", "options")
    assert split_mode_name("recfound") == ("recfound", "free")
    raw = default_config.model_dump(by_alias=True)
    raw["evaluate"]["answer_modes"] = ["options"]
    with pytest.raises(ValueError, match="keep 'free'"):
        Config.model_validate(raw)
    raw["evaluate"]["answer_modes"] = ["free", "free"]
    with pytest.raises(ValueError, match="repeated"):
        Config.model_validate(raw)
    raw["evaluate"]["answer_modes"] = ["free", "beam"]
    with pytest.raises(ValueError):
        Config.model_validate(raw)
