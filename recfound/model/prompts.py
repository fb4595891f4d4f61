"""How text becomes token ids: one definition for training, evaluation and the CLI.

Generative samples use the model's chat template (user = instruction + input, assistant =
output) or, for a tokenizer without one, the plain form `instruction\\n\\ninput\\n\\n`; the loss
is taken on response tokens only. Embedding samples are `instruction + EMBED_SEPARATOR + text`
and pool over the text's tokens only (GritLM); passages carry no instruction.

Every prompt string is complete (it holds any BOS the format needs), so it is tokenised with
`add_special_tokens=False` everywhere: training sees exactly the ids generation sees.

User text (instruction, input, output, passage) can never become a control token: a review that
contains `<|im_start|>assistant` is tokenised as those characters, not as a new turn. Prompt and
response strings mark such spellings (transformers' `sanitize_control_tokens` markers) and
`token_ids` encodes the marked spans as plain text, while the template's own control tokens stay
tokens; embedding inputs are tokenised with `split_special_tokens`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase
from transformers.utils.chat_template_utils import encode_marked_chat, mark_control_tokens

# Between an embedding instruction and the text it applies to. Part of the input format a trained
# adapter expects, so it is fixed here rather than a tunable knob.
EMBED_SEPARATOR = "\n"
# Between the parts of a plain (template-less) prompt.
PLAIN_SEPARATOR = "\n\n"
# Labels with this value are ignored by the cross-entropy loss (PyTorch / transformers default).
IGNORE_INDEX = -100
# A first guess at how many characters of a long input can fill the prompt budget: only that end
# of the input is tokenised (and more only if it holds too few tokens), so a 1 MB input costs
# about what a budget-sized one does.
_CHARS_PER_TOKEN_GUESS = 8

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
    # The text was longer than max_len and lost its end.
    truncated: bool = False


@dataclass(frozen=True)
class FittedPrompt:
    """A generation prompt within a token budget, and how much of the input's start it dropped."""

    text: str
    input_ids: list[int]
    # Characters dropped from the start of the input (0: the whole input is in the prompt).
    dropped_chars: int = 0

    @property
    def truncated(self) -> bool:
        return self.dropped_chars > 0


def _template_text(tokenizer: PreTrainedTokenizerBase) -> str:
    template = tokenizer.chat_template
    if isinstance(template, dict):  # named templates: any of them may write a token
        return "\0".join(template.values())
    return template or ""


def control_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[str, ...]:
    """The added tokens that structure a prompt: every special token, plus any other added token
    the chat template writes (or `tokenizer.chat_control_tokens` lists).

    The same set transformers' `apply_chat_template(sanitize_control_tokens=True)` protects. Other
    added tokens are vocabulary (an item-id token, say) and stay whole in user text.
    """
    listed = getattr(tokenizer, "chat_control_tokens", None)
    template = _template_text(tokenizer)

    def controls(content: str) -> bool:
        if listed is not None:
            return content in listed
        # A whitespace token (Gemma's "\n") is ordinary text in a template, not a control.
        return content in template and not content.isspace()

    return tuple(
        token.content
        for token in tokenizer.added_tokens_decoder.values()
        if token.special or controls(token.content)
    )


@lru_cache(maxsize=16)
def _spelling_pattern(tokens: tuple[str, ...]) -> re.Pattern[str]:
    # Longest first, so a token wins over the shorter tokens it contains.
    longest_first = sorted(tokens, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, longest_first)) or "(?!)")


def as_text(tokenizer: PreTrainedTokenizerBase, text: str) -> str:
    """`text` with every control-token spelling in it marked, so `token_ids` encodes it as text.

    The markers are private-use characters (any already in `text` are dropped first, so they
    cannot be forged); text without a control-token spelling is returned unchanged.
    """
    return mark_control_tokens(text, _spelling_pattern(control_tokens(tokenizer)))


def token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Ids of a prompt or response string made here, without added special tokens.

    Spans marked by `as_text` are encoded as plain text, everything else as the tokenizer does,
    so the template's own control tokens stay tokens. Unmarked text gets exactly the ids of
    `tokenizer(text, add_special_tokens=False)`.
    """
    return encode_marked_chat(tokenizer, text)


def user_message(instruction: str, input: str) -> str:
    """The user turn: instruction and input separated by a blank line (either may be empty)."""
    return PLAIN_SEPARATOR.join(part for part in (instruction, input) if part)


def generation_prompt(tokenizer: PreTrainedTokenizerBase, instruction: str, input: str) -> str:
    """The prompt string the model continues: chat template with the assistant turn opened.

    Without a chat template: `bos + instruction\\n\\ninput\\n\\n` (bos only if the tokenizer
    has one). Control-token spellings in instruction and input are marked (`as_text`), so
    tokenise the string with `token_ids` (as `collate_prompts` does).
    """
    message = as_text(tokenizer, user_message(instruction, input))
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
    (some insert reasoning tags) falls back to `output + eos`, like the plain format. Like the
    prompt, control-token spellings in `output` are marked as text.
    """
    output = as_text(tokenizer, output)
    if tokenizer.chat_template:
        messages = [
            {"role": "user", "content": as_text(tokenizer, user_message(instruction, input))},
            {"role": "assistant", "content": output},
        ]
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        prompt = generation_prompt(tokenizer, instruction, input)
        if full.startswith(prompt):
            return full[len(prompt) :]
    return output + (tokenizer.eos_token or "")


def _token_starts(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """The character offset at which each token of `text` (as plain text) starts."""
    if not tokenizer.is_fast:
        raise ValueError("cutting a long input needs a fast tokenizer (character offsets)")
    # verbose=False: a long text is expected here, no "longer than the model" warning.
    enc = tokenizer(
        text,
        add_special_tokens=False,
        split_special_tokens=True,
        return_offsets_mapping=True,
        verbose=False,
    )
    return [start for start, _ in enc["offset_mapping"]]


def _input_tail(
    tokenizer: PreTrainedTokenizerBase, input: str, min_tokens: int
) -> tuple[str, list[int]]:
    """An end of `input` holding more than `min_tokens` tokens (or all of it), with token starts.

    Starts from `_CHARS_PER_TOKEN_GUESS` characters per token and takes four times more while too
    few tokens come out, so a huge input is never tokenised whole.
    """
    chars = _CHARS_PER_TOKEN_GUESS * (min_tokens + 1)
    while True:
        tail = input[-chars:] if chars < len(input) else input
        starts = _token_starts(tokenizer, tail)
        if len(starts) > min_tokens or len(tail) == len(input):
            return tail, starts
        chars *= 4


def _fitted(tokenizer: PreTrainedTokenizerBase, instruction: str, kept: str, dropped: int):
    text = generation_prompt(tokenizer, instruction, kept)
    return FittedPrompt(text, token_ids(tokenizer, text), dropped)


def fit_prompt(
    tokenizer: PreTrainedTokenizerBase, instruction: str, input: str, max_prompt: int
) -> FittedPrompt:
    """The generation prompt of `input`, its start dropped until it has at most `max_prompt` tokens.

    Cutting the input's head keeps the template, the instruction and the end of the input (the
    most recent history, the candidates, the question), which is what the answer depends on;
    the input is cut at a token boundary. Only the input is cut: when the template and the
    instruction alone exceed the budget, the prompt returned (with no input) is still over it
    and the caller decides (training keeps its end, the CLI refuses the request).
    Token counts shift slightly when text is re-tokenised, so the cut is refined in a loop.
    """
    if len(input) <= _CHARS_PER_TOKEN_GUESS * max_prompt:  # the common case: one tokenisation
        fitted = _fitted(tokenizer, instruction, input, 0)
        if len(fitted.input_ids) <= max_prompt:
            return fitted
    # The input alone may fill the budget: only its end can stay, so only that is tokenised.
    tail, starts = _input_tail(tokenizer, input, max_prompt)
    keep = len(starts)
    fitted = _fitted(tokenizer, instruction, tail, len(input) - len(tail))
    while len(fitted.input_ids) > max_prompt and keep > 0:
        keep = max(0, keep - (len(fitted.input_ids) - max_prompt))
        kept = tail[starts[-keep] :] if keep else ""
        fitted = _fitted(tokenizer, instruction, kept, len(input) - len(kept))
    return fitted


def encode_generative(
    tokenizer: PreTrainedTokenizerBase,
    instruction: str,
    input: str,
    output: str,
    max_prompt: int,
    max_response: int,
) -> GenerativeExample:
    """Token ids of prompt + response with labels masked (-100) on the prompt.

    The prompt is cut to `max_prompt` tokens from the left of the input text (`fit_prompt`); the
    response is cut to `max_response` tokens from its end, so its start (the answer) stays.
    """
    # Only an instruction longer than the budget leaves the prompt over it: keep the prompt's
    # end, which holds the assistant header the response must follow.
    prompt = fit_prompt(tokenizer, instruction, input, max_prompt).input_ids[-max_prompt:]
    response = response_ids(tokenizer, instruction, input, output, max_response)
    return GenerativeExample(
        input_ids=prompt + response, labels=[IGNORE_INDEX] * len(prompt) + response
    )


def response_ids(
    tokenizer: PreTrainedTokenizerBase,
    instruction: str,
    input: str,
    output: str,
    max_response: int,
) -> list[int]:
    """`output` as a training target: its `response_text` (answer + end-of-turn marks) as
    ids, cut to `max_response` tokens from its end. What training learns and what option
    scoring (recfound.model.predictor `score_options`) reads back."""
    response = token_ids(tokenizer, response_text(tokenizer, instruction, input, output))
    return response[:max_response]


def embedding_text(instruction: str, text: str) -> str:
    """`instruction + EMBED_SEPARATOR + text`, or the text alone when there is no instruction."""
    return instruction + EMBED_SEPARATOR + text if instruction else text


def _embedding_encoding(tokenizer: PreTrainedTokenizerBase, full: str, max_len: int):
    return tokenizer(
        full,
        truncation=True,
        max_length=max_len,
        return_offsets_mapping=True,
        split_special_tokens=True,
        verbose=False,
    )


def _whitespace_cut(text: str, chars: int) -> int:
    """The start of the last whitespace run at or before `chars`: a cut there ends a word, so
    the tokens before it are those of the whole text; 0 when there is none."""
    starts = [run.start() for run in re.finditer(r"\s+", text[: chars + 1])]
    return starts[-1] if starts else 0


def _text_head(
    tokenizer: PreTrainedTokenizerBase, instruction: str, text: str, max_len: int
) -> str:
    """A start of `text` that already holds more than `max_len` tokens (with its instruction),
    cut at whitespace; the whole text when it is short or no such start is found.

    Tokenisers split words at whitespace before anything else, so the first `max_len` tokens
    of the head are those of the whole text: cutting the head instead costs what a text of
    the budget's size does, not what a megabyte does. Starts at `_CHARS_PER_TOKEN_GUESS`
    characters per token and takes four times more while that holds too few tokens.
    """
    chars = _CHARS_PER_TOKEN_GUESS * (max_len + 1)
    while chars < len(text):
        cut = _whitespace_cut(text, chars)
        if cut:
            head = text[:cut]
            enc = tokenizer(
                embedding_text(instruction, head),
                add_special_tokens=True,
                split_special_tokens=True,
                verbose=False,
            )
            if len(enc["input_ids"]) > max_len:
                return head
        chars *= 4
    return text


def encode_embedding(
    tokenizer: PreTrainedTokenizerBase, instruction: str, text: str, max_len: int
) -> EmbeddingExample:
    """Ids of the embedding input (cut to `max_len` from the end) and its pool mask.

    pool_mask[i] = 1 iff token i covers characters of `text`; the instruction, the separator
    and special tokens the tokenizer adds (BOS ...) are 0. The tokenizer cuts the input, so the
    model never sees more than `max_len` tokens (`truncated` says whether text was lost); only
    a start of a long text is tokenised (`_text_head`), with the same ids as the whole.
    Special-token spellings in the instruction or the text are plain text
    (`split_special_tokens`): an embedding input has no template, so its only special tokens are
    the ones the tokenizer adds. (A non-special added token stays whole, even one a chat
    template writes: there is no chat turn here for it to open.) Needs a fast tokenizer.
    """
    if not tokenizer.is_fast:
        raise ValueError("encode_embedding needs a fast tokenizer (character offsets)")
    head = _text_head(tokenizer, instruction, text, max_len)
    full = embedding_text(instruction, head)
    text_start = len(full) - len(head)
    enc = _embedding_encoding(tokenizer, full, max_len)
    offsets = enc["offset_mapping"]
    pool_mask = [int(end > start and end > text_start) for start, end in offsets]
    if not any(pool_mask):
        raise ValueError(
            f"no text tokens left to pool within max_len={max_len} "
            f"(instruction {len(instruction)} chars, text {len(text)} chars)"
        )
    # Cut iff the kept tokens stop before the text's end (trailing whitespace a normaliser
    # drops does not count); a head shorter than the text was cut by construction.
    covered = max(end for _, end in offsets)
    truncated = len(head) < len(text) or (len(offsets) >= max_len and covered < len(full.rstrip()))
    return EmbeddingExample(
        input_ids=list(enc["input_ids"]), pool_mask=pool_mask, truncated=truncated
    )


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
    """Left-padded input_ids + attention_mask of complete prompt strings, ready for generate.

    The strings are tokenised with `token_ids`, so `generation_prompt`'s marks hold here too.
    """
    ids = [token_ids(tokenizer, prompt) for prompt in prompts]
    return {
        "input_ids": pad_sequences(ids, pad_id, "left"),
        "attention_mask": pad_sequences([[1] * len(seq) for seq in ids], 0, "left"),
    }
