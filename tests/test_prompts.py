"""Prompt formatting: chat template, loss masks, truncation, pool masks, padding."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from recfound.model import prompts as P

INSTRUCTION = "Pick the letter of the next item."
INPUT = "History: red shirt, blue socks, running jacket. Candidates: A shoes B hat C scarf."
OUTPUT = "A"


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture()
def plain_tok(tiny_model_dir):
    """The same tokenizer without a chat template."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    return tokenizer


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_generation_prompt_is_the_chat_template_with_instruction_and_input_as_user_turn(tok):
    prompt = P.generation_prompt(tok, INSTRUCTION, INPUT)
    assert (
        prompt == f"<|im_start|>user\n{INSTRUCTION}\n\n{INPUT}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_generation_prompt_without_chat_template_is_plain_text(plain_tok):
    prompt = P.generation_prompt(plain_tok, INSTRUCTION, INPUT)
    assert prompt == f"{plain_tok.bos_token}{INSTRUCTION}\n\n{INPUT}\n\n"


def test_generative_labels_mask_the_prompt_and_keep_the_response(tok):
    example = P.encode_generative(tok, INSTRUCTION, INPUT, OUTPUT, 512, 64)
    prompt_ids = ids(tok, P.generation_prompt(tok, INSTRUCTION, INPUT))
    n = len(prompt_ids)
    assert example.input_ids[:n] == prompt_ids
    assert example.labels[:n] == [P.IGNORE_INDEX] * n
    assert example.labels[n:] == example.input_ids[n:]
    # The response is the template's assistant turn: the answer, then the end-of-turn marks.
    assert tok.decode(example.labels[n:]) == f"{OUTPUT}<|im_end|>\n"
    assert example.prompt_length == n


def test_generative_response_without_chat_template_ends_with_eos(plain_tok):
    example = P.encode_generative(plain_tok, INSTRUCTION, INPUT, OUTPUT, 512, 64)
    response = [label for label in example.labels if label != P.IGNORE_INDEX]
    assert plain_tok.decode(response) == OUTPUT + plain_tok.eos_token


def test_long_input_is_cut_from_its_start_keeping_template_instruction_and_input_end(tok):
    long_input = " ".join(f"item{i}" for i in range(200)) + " final candidates A B C"
    example = P.encode_generative(tok, INSTRUCTION, long_input, OUTPUT, 64, 64)
    prompt_ids = example.input_ids[: example.prompt_length]
    prompt = tok.decode(prompt_ids)
    assert example.prompt_length <= 64
    assert prompt.startswith(f"<|im_start|>user\n{INSTRUCTION}\n\n")
    assert prompt.endswith("final candidates A B C<|im_end|>\n<|im_start|>assistant\n")
    assert "item0 " not in prompt
    # Nearly the whole budget is used: only the head of the input was dropped.
    assert example.prompt_length >= 64 - 4
    assert tok.decode(example.input_ids[example.prompt_length :]) == f"{OUTPUT}<|im_end|>\n"


def test_long_response_is_cut_at_its_end_never_its_start(tok):
    response = "The user likes running gear " * 20
    example = P.encode_generative(tok, INSTRUCTION, INPUT, response, 512, 8)
    kept = example.labels[example.prompt_length :]
    assert len(kept) == 8
    assert tok.decode(kept).startswith("The user likes")


def test_embedding_pool_mask_covers_exactly_the_text_not_the_instruction(tok):
    text = "red cotton shirt from Acme"
    example = P.encode_embedding(tok, "Represent the item for retrieval", text, 128)
    pooled = [i for i, m in zip(example.input_ids, example.pool_mask, strict=True) if m]
    excluded = [i for i, m in zip(example.input_ids, example.pool_mask, strict=True) if not m]
    assert tok.decode(pooled) == text
    assert tok.decode(excluded) == "Represent the item for retrieval" + P.EMBED_SEPARATOR
    assert example.input_ids == ids(tok, "Represent the item for retrieval\n" + text)


def test_passage_without_instruction_pools_every_token(tok):
    example = P.encode_embedding(tok, "", "blue running shoes", 128)
    assert example.input_ids == ids(tok, "blue running shoes")
    assert all(example.pool_mask)


def test_embedding_input_is_cut_to_max_len_from_the_end(tok):
    example = P.encode_embedding(tok, "Represent", "shoes " * 100, 16)
    assert len(example.input_ids) == len(example.pool_mask) == 16
    assert tok.decode(example.input_ids).startswith("Represent\nshoes")


def test_embedding_with_no_text_left_within_max_len_is_an_error(tok):
    with pytest.raises(ValueError, match="no text tokens"):
        P.encode_embedding(tok, "a long instruction " * 20, "shoes", 8)


@pytest.mark.parametrize("side", ["left", "right"])
def test_embedding_collate_pads_ids_attention_and_pool_masks_on_the_chosen_side(tok, side):
    short = P.encode_embedding(tok, "Represent", "hat", 64)
    long = P.encode_embedding(tok, "Represent", "a red cotton shirt from Acme", 64)
    batch = P.collate_embedding([short, long], pad_id=tok.pad_token_id, side=side)
    width = len(long.input_ids)
    pad = width - len(short.input_ids)
    assert batch["input_ids"].shape == batch["pool_mask"].shape == (2, width)
    row = batch["input_ids"][0].tolist()
    attention = batch["attention_mask"][0].tolist()
    pool = batch["pool_mask"][0].tolist()
    if side == "left":
        assert row == [tok.pad_token_id] * pad + short.input_ids
        assert attention == [0] * pad + [1] * len(short.input_ids)
        assert pool == [0] * pad + short.pool_mask
    else:
        assert row == short.input_ids + [tok.pad_token_id] * pad
        assert attention == [1] * len(short.input_ids) + [0] * pad
        assert pool == short.pool_mask + [0] * pad
    assert batch["attention_mask"][1].tolist() == [1] * width


def test_generative_collate_pads_labels_with_ignore_index(tok):
    a = P.encode_generative(tok, INSTRUCTION, "short", OUTPUT, 512, 64)
    b = P.encode_generative(tok, INSTRUCTION, INPUT, OUTPUT, 512, 64)
    batch = P.collate_generative([a, b], pad_id=tok.pad_token_id)
    pad = len(b.input_ids) - len(a.input_ids)
    assert batch["labels"][0].tolist() == a.labels + [P.IGNORE_INDEX] * pad
    assert batch["attention_mask"][0].tolist() == [1] * len(a.input_ids) + [0] * pad


def test_prompt_collate_pads_on_the_left_for_generation(tok):
    prompts = [P.generation_prompt(tok, "", "hi"), P.generation_prompt(tok, INSTRUCTION, INPUT)]
    batch = P.collate_prompts(tok, prompts, tok.pad_token_id)
    first = ids(tok, prompts[0])
    pad = batch["input_ids"].shape[1] - len(first)
    assert batch["input_ids"][0].tolist() == [tok.pad_token_id] * pad + first
    assert batch["attention_mask"][0].tolist() == [0] * pad + [1] * len(first)
