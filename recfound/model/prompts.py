"""How text becomes token ids: one definition for training, evaluation and the CLI.

Generative samples use the model's chat template (user = instruction + input, assistant =
output) or, for a tokenizer without one, the plain form `instruction\\n\\ninput\\n\\n`; the loss
is taken on response tokens only. Embedding samples are `instruction + EMBED_SEPARATOR + text`
and pool over the text's tokens only (GritLM); passages carry no instruction.

Every prompt string is complete (it holds any BOS the format needs), so it is tokenised with
`add_special_tokens=False` everywhere: training sees exactly the ids generation sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase

# Between an embedding instruction and the text it applies to. Part of the input format a trained
# adapter expects, so it is fixed here rather than a tunable knob.
EMBED_SEPARATOR = "\n"
# Between the parts of a plain (template-less) prompt.
PLAIN_SEPARATOR = "\n\n"
# Labels with this value are ignored by the cross-entropy loss (PyTorch / transformers default).
IGNORE_INDEX = -100

PadSide = Literal["left", "right"]


@dataclass(frozen=True)
class GenerativeExample:
    """One generative sample: prompt + response ids, labels = -100 on the prompt."""

    input_ids: list[int]
    labels: list[int]

    @property
    def prompt_length(self) -> int:
        return sum(1 for label in self.labels if label == IGNORE_INDEX)


@dataclass(frozen=True)
class EmbeddingExample:
    """One text to embed: ids and a mask that is 1 on the text's tokens (instruction excluded)."""

    input_ids: list[int]
    pool_mask: list[int]


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def user_message(instruction: str, input: str) -> str:
    """The user turn: instruction and input separated by a blank line (either may be empty)."""
    return PLAIN_SEPARATOR.join(part for part in (instruction, input) if part)


def generation_prompt(tokenizer: PreTrainedTokenizerBase, instruction: str, input: str) -> str:
    """The prompt string the model continues: chat template with the assistant turn opened.

    Without a chat template: `bos + instruction\\n\\ninput\\n\\n` (bos only if the tokenizer
    has one).
    """
    message = user_message(instruction, input)
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
    return (tokenizer.bos_token or "") + message + PLAIN_SEPARATOR


def response_text(
    tokenizer: PreTrainedTokenizerBase, instruction: str, input: str, output: str
) -> str:
    """What follows the generation prompt in a full conversation (output + end-of-turn marks).

    With a chat template this is the template's own rendering of the assistant turn (e.g.
    `Paris<|im_end|>\\n`); a template whose full rendering does not extend the generation prompt
    (some insert reasoning tags) falls back to `output + eos`, like the plain format.
    """
    if tokenizer.chat_template:
        messages = [
            {"role": "user", "content": user_message(instruction, input)},
            {"role": "assistant", "content": output},
        ]
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        prompt = generation_prompt(tokenizer, instruction, input)
        if full.startswith(prompt):
            return full[len(prompt) :]
    return output + (tokenizer.eos_token or "")


def _prompt_ids(
    tokenizer: PreTrainedTokenizerBase, instruction: str, input: str, max_prompt: int
) -> list[int]:
    """Prompt ids of at most `max_prompt` tokens, dropping the *start of the input* first.

    Cutting the input's head keeps the template, the instruction and the end of the input (the
    most recent history, the candidates, the question), which is what the answer depends on.
    Token counts shift slightly when text is re-tokenised, so the cut is refined in a loop.
    """
    ids = _ids(tokenizer, generation_prompt(tokenizer, instruction, input))
    input_ids = _ids(tokenizer, input)
    keep = len(input_ids)
    while len(ids) > max_prompt and keep > 0:
        keep = max(0, keep - (len(ids) - max_prompt))
        kept_input = tokenizer.decode(input_ids[len(input_ids) - keep :]) if keep else ""
        ids = _ids(tokenizer, generation_prompt(tokenizer, instruction, kept_input))
    # Only an instruction longer than the budget gets here: keep the prompt's end, which holds
    # the assistant header the response must follow.
    return ids[-max_prompt:] if len(ids) > max_prompt else ids


def encode_generative(
    tokenizer: PreTrainedTokenizerBase,
    instruction: str,
    input: str,
    output: str,
    max_prompt: int,
    max_response: int,
) -> GenerativeExample:
    """Token ids of prompt + response with labels masked (-100) on the prompt.

    The prompt is cut to `max_prompt` tokens from the left of the input text; the response is
    cut to `max_response` tokens from its end, so its start (the answer) always stays.
    """
    prompt = _prompt_ids(tokenizer, instruction, input, max_prompt)
    response = _ids(tokenizer, response_text(tokenizer, instruction, input, output))[:max_response]
    return GenerativeExample(
        input_ids=prompt + response, labels=[IGNORE_INDEX] * len(prompt) + response
    )


def embedding_text(instruction: str, text: str) -> str:
    """`instruction + EMBED_SEPARATOR + text`, or the text alone when there is no instruction."""
    return instruction + EMBED_SEPARATOR + text if instruction else text


def encode_embedding(
    tokenizer: PreTrainedTokenizerBase, instruction: str, text: str, max_len: int
) -> EmbeddingExample:
    """Ids of the embedding input (cut to `max_len` from the end) and its pool mask.

    pool_mask[i] = 1 iff token i covers characters of `text`; the instruction, the separator
    and special tokens the tokenizer adds (BOS ...) are 0. Needs a fast tokenizer (offsets).
    """
    if not tokenizer.is_fast:
        raise ValueError("encode_embedding needs a fast tokenizer (character offsets)")
    full = embedding_text(instruction, text)
    text_start = len(full) - len(text)
    enc = tokenizer(full, truncation=True, max_length=max_len, return_offsets_mapping=True)
    pool_mask = [int(end > start and end > text_start) for start, end in enc["offset_mapping"]]
    if not any(pool_mask):
        raise ValueError(
            f"no text tokens left to pool within max_len={max_len} "
            f"(instruction {len(instruction)} chars, text {len(text)} chars)"
        )
    return EmbeddingExample(input_ids=list(enc["input_ids"]), pool_mask=pool_mask)


def pad_sequences(sequences: Sequence[Sequence[int]], value: int, side: PadSide) -> torch.Tensor:
    """Stack ragged int sequences into a (batch, longest) tensor, padding with `value`."""
    longest = max(len(seq) for seq in sequences)
    rows = []
    for seq in sequences:
        padding = [value] * (longest - len(seq))
        rows.append(padding + list(seq) if side == "left" else list(seq) + padding)
    return torch.tensor(rows, dtype=torch.long)


def collate_generative(
    examples: Sequence[GenerativeExample], pad_id: int, side: PadSide = "right"
) -> dict[str, torch.Tensor]:
    """Batch generative examples: input_ids, attention_mask, labels (-100 on padding)."""
    return {
        "input_ids": pad_sequences([e.input_ids for e in examples], pad_id, side),
        "attention_mask": pad_sequences([[1] * len(e.input_ids) for e in examples], 0, side),
        "labels": pad_sequences([e.labels for e in examples], IGNORE_INDEX, side),
    }


def collate_embedding(
    examples: Sequence[EmbeddingExample], pad_id: int, side: PadSide = "right"
) -> dict[str, torch.Tensor]:
    """Batch embedding examples: input_ids, attention_mask, pool_mask (0 on padding)."""
    return {
        "input_ids": pad_sequences([e.input_ids for e in examples], pad_id, side),
        "attention_mask": pad_sequences([[1] * len(e.input_ids) for e in examples], 0, side),
        "pool_mask": pad_sequences([e.pool_mask for e in examples], 0, side),
    }


def collate_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], pad_id: int
) -> dict[str, torch.Tensor]:
    """Left-padded input_ids + attention_mask of complete prompt strings, ready for generate."""
    ids = [_ids(tokenizer, prompt) for prompt in prompts]
    return {
        "input_ids": pad_sequences(ids, pad_id, "left"),
        "attention_mask": pad_sequences([[1] * len(seq) for seq in ids], 0, "left"),
    }
