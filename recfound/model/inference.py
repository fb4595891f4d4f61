"""Batched inference with a RecFound model, the low level: load it, decode token ids, embed
encoded texts; and the CLI's request files and outputs.

Everything that asks a model goes through recfound.model.predictor, which fits prompts and
texts as training did and calls these loops; so a model answers the same way whether it is
scored, indexed, served or asked by hand.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recfound.atomic import atomic_file
from recfound.config import Config
from recfound.data.readers.common import iter_json_objects, iter_lines
from recfound.errors import DataError, RecFoundError
from recfound.model import prompts as fmt
from recfound.model.unified import RecFoundModel, resolve_dtype
from recfound.progress import progress as progress_bar


@dataclass(frozen=True)
class TextInput:
    """One request: the task input (or text to embed) and its instruction.

    None: the request gave none, and the predictor supplies the task's
    (`Predictor.with_instructions`); "" is an explicit "no instruction" (e.g. an embedding
    passage, GritLM style).
    """

    input: str
    instruction: str | None = None


def default_device() -> torch.device:
    """The first CUDA device when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_recfound(
    model_dir: str | Path,
    adapter_dir: str | Path | None = None,
    cfg: Config | None = None,
    device: torch.device | str | None = None,
):
    """Load base model + tokenizer from `model_dir` and, if given, the adapter in `adapter_dir`.

    Returns `(RecFoundModel, tokenizer)` in eval mode, on `device` (default: CUDA if present),
    in the dtype `cfg.model.dtype` resolves to there.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = cfg or Config()
    device = torch.device(device) if device is not None else default_device()
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise RecFoundError(
            f"{model_dir}: no model here (no config.json); run `recfound stage base_model` "
            "or pass --model DIR"
        )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=resolve_dtype(cfg.model, device))
    adapter = None
    if adapter_dir is not None:
        from recfound.model.adapters import load_adapter

        adapter_dir = Path(adapter_dir)
        if not adapter_dir.is_dir():
            raise RecFoundError(f"{adapter_dir}: adapter directory not found")
        adapter = load_adapter(lm, adapter_dir)
    model = RecFoundModel(lm, adapter).to(device)
    model.eval()
    return model, tokenizer


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _longest_first(lengths: Sequence[int]) -> list[int]:
    """Indices ordering items longest first: batches of similar length waste little padding."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def _left_padded_batches(
    prompt_ids: Sequence[Sequence[int]], batch_size: int, pad_id: int, device: torch.device
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """(prompt indices, input_ids, attention_mask) of the prompts longest first, in left-padded
    batches of `batch_size`: each batch's last position is every prompt's last token."""
    order = _longest_first([len(ids) for ids in prompt_ids])
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids = [prompt_ids[i] for i in chunk]
        input_ids = fmt.pad_sequences(ids, pad_id, "left").to(device)
        mask = fmt.pad_sequences([[1] * len(seq) for seq in ids], 0, "left").to(device)
        yield chunk, input_ids, mask


def generate_ids(
    model: RecFoundModel,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    task_id: int,
    max_new_tokens: int,
    batch_size: int,
    progress: bool = True,
) -> list[str]:
    """Greedy responses, in order, to tokenised prompts (`prompts.fit_prompt`'s `input_ids`).

    Prompts are taken longest first in batches of `batch_size`, so each batch holds prompts of
    similar length (little padding), left-padded; every sample is routed to `task_id`.
    """
    device = _device_of(model)
    answers: list[str] = [""] * len(prompt_ids)
    bar = progress_bar(
        total=len(prompt_ids), desc="generate", unit="prompt", leave=None, disable=not progress
    )
    batches = _left_padded_batches(prompt_ids, batch_size, tokenizer.pad_token_id, device)
    for chunk, input_ids, mask in batches:
        new_tokens = model.generate(
            input_ids,
            mask,
            task_ids=torch.full((len(chunk),), task_id, device=device),
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        for i, text in zip(chunk, texts, strict=True):
            answers[i] = text.strip()
        bar.update(len(chunk))
    bar.close()
    return answers


@torch.no_grad()
def option_log_likelihoods(
    model: RecFoundModel,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    options: Sequence[Sequence[Sequence[int]]],
    task_id: int,
    batch_size: int,
    progress: bool = False,
) -> list[np.ndarray]:
    """Per prompt, Σ_t log p(option token t | prompt, option tokens before t) of each of its
    options (token ids, at least one each) by teacher forcing, routed to `task_id`: float64,
    in order.

    Prompts run longest first in left-padded batches of `batch_size`, one forward each whose
    key/value cache is kept; then every option of the batch's prompts runs in right-padded
    batches of `batch_size`, each reading its own prompt's rows of that cache
    (`batch_select_indices`). The prompt's last logits score each option's first token, the
    options' own logits the rest: the numbers one forward of prompt + option gives
    (tests/test_answer_modes.py), at the cost of one prompt forward per row, batched, rather
    than one per option (SR: 20 candidates after a ~300-token prompt).
    """
    if any(len(answer) == 0 for answers in options for answer in answers):
        raise ValueError("an option without tokens cannot be scored")
    device = _device_of(model)
    scores = [np.zeros(len(answers), dtype=np.float64) for answers in options]
    bar = progress_bar(
        total=len(prompt_ids), desc="score options", unit="prompt", leave=None, disable=not progress
    )
    batches = _left_padded_batches(prompt_ids, batch_size, tokenizer.pad_token_id, device)
    for chunk, input_ids, mask in batches:
        with model.routed(torch.full((len(chunk),), task_id, device=device)):
            head = model.lm(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True,
                logits_to_keep=1,
            )
        first = torch.log_softmax(head.logits[:, -1].double(), dim=-1)  # left padding: all real
        pairs = [(b, k) for b, i in enumerate(chunk) for k in range(len(options[i]))]
        for part_start in range(0, len(pairs), batch_size):
            part = pairs[part_start : part_start + batch_size]
            rows = torch.tensor([b for b, _ in part], device=device)
            answers = [options[chunk[b]][k] for b, k in part]
            option_ids = fmt.pad_sequences(answers, tokenizer.pad_token_id, "right").to(device)
            option_mask = fmt.pad_sequences([[1] * len(a) for a in answers], 0, "right").to(device)
            cache = copy.deepcopy(head.past_key_values)
            cache.batch_select_indices(rows)
            positions = mask.sum(dim=1)[rows, None] + torch.arange(
                option_ids.shape[1], device=device
            )
            with model.routed(torch.full((len(part),), task_id, device=device)):
                out = model.lm(
                    input_ids=option_ids,
                    attention_mask=torch.cat([mask[rows], option_mask], dim=1),
                    position_ids=positions,
                    past_key_values=cache,
                    use_cache=True,
                )
            log_probs = torch.log_softmax(out.logits[:, :-1].double(), dim=-1)
            later = log_probs.gather(-1, option_ids[:, 1:, None])[..., 0] * option_mask[:, 1:]
            totals = first[rows, option_ids[:, 0]] + later.sum(dim=1)
            for (b, k), total in zip(part, totals.tolist(), strict=True):
                scores[chunk[b]][k] = total
        bar.update(len(chunk))
    bar.close()
    return scores


def generate_batch(
    model: RecFoundModel,
    tokenizer,
    prompts: Sequence[str],
    task_id: int,
    max_new_tokens: int,
    batch_size: int,
    progress: bool = True,
) -> list[str]:
    """`generate_ids` of complete prompt strings (`prompts.generation_prompt`), unfitted: the
    low-level call; ask through recfound.model.predictor, which fits them as training did."""
    ids = [fmt.token_ids(tokenizer, prompt) for prompt in prompts]
    return generate_ids(model, tokenizer, ids, task_id, max_new_tokens, batch_size, progress)


@torch.no_grad()
def embed_examples(
    model: RecFoundModel,
    tokenizer,
    examples: Sequence[fmt.EmbeddingExample],
    task_id: int,
    batch_size: int,
    progress: bool = True,
) -> torch.Tensor:
    """The model's unit-norm embeddings (len(examples), d) of encoded inputs, on the CPU as
    float32 (normalised in the model's dtype: `predictor.unit_float32` renormalises them)."""
    order = _longest_first([len(e.input_ids) for e in examples])
    device = _device_of(model)
    vectors: list[torch.Tensor | None] = [None] * len(examples)
    bar = progress_bar(
        total=len(examples), desc="embed", unit="text", leave=None, disable=not progress
    )
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = fmt.collate_embedding([examples[i] for i in chunk], tokenizer.pad_token_id)
        batch = {name: tensor.to(device) for name, tensor in batch.items()}
        emb = model.embed(
            batch["input_ids"],
            batch["attention_mask"],
            batch["pool_mask"],
            task_ids=torch.full((len(chunk),), task_id, device=device),
        )
        for i, row in zip(chunk, emb.float().cpu(), strict=True):
            vectors[i] = row
        bar.update(len(chunk))
    bar.close()
    if not vectors:
        return torch.empty(0, model.lm.config.hidden_size)
    return torch.stack(vectors)


def text_inputs(texts: Sequence[str], instruction: str | None = None) -> list[TextInput]:
    """Requests from command-line texts; a blank text is an error naming its position."""
    for number, text in enumerate(texts, start=1):
        if not text.strip():
            raise RecFoundError(f"input argument {number} is empty")
    return [TextInput(text, instruction) for text in texts]


def read_inputs(path: str | Path) -> list[TextInput]:
    """Requests from a file: JSONL objects with `input` (and optional `instruction`) when the
    name ends in .jsonl, else one input per non-blank line.

    An empty file, a file of blank lines and a blank `input` are errors naming the file (and
    line): there is nothing to answer, and a model fed nothing answers noise.
    """
    path = Path(path)
    if path.suffix != ".jsonl":
        requests = [TextInput(line.strip("\r\n")) for _, line in iter_lines(path) if line.strip()]
        if not requests:
            raise DataError(path, "file holds no inputs (only blank lines)")
        return requests
    requests = []
    for number, row in iter_json_objects(path):
        if not isinstance(row.get("input"), str):
            raise DataError(path, 'expected an object with a string "input"', line=number)
        if not row["input"].strip():
            raise DataError(path, '"input" is empty', line=number)
        instruction = row.get("instruction")
        if instruction is not None and not isinstance(instruction, str):
            raise DataError(path, '"instruction" must be a string', line=number)
        requests.append(TextInput(row["input"], instruction))
    return requests


def generation_lines(requests: Sequence[TextInput], answers: Sequence[str]) -> list[str]:
    """One JSON object {"instruction", "input", "output"} per request."""
    return [
        json.dumps(
            {"instruction": r.instruction, "input": r.input, "output": a}, ensure_ascii=False
        )
        for r, a in zip(requests, answers, strict=True)
    ]


def embedding_lines(requests: Sequence[TextInput], vectors: np.ndarray) -> list[str]:
    """One JSON object {"input", "embedding"} per request."""
    return [
        json.dumps({"input": r.input, "embedding": v}, ensure_ascii=False)
        for r, v in zip(requests, vectors.tolist(), strict=True)
    ]


def write_lines(lines: Sequence[str], out: Path) -> None:
    """Write `lines` as a text file (one per line), atomically."""
    with atomic_file(out) as handle:
        handle.writelines(line + "\n" for line in lines)


def write_embeddings(requests: Sequence[TextInput], vectors: np.ndarray, out: Path) -> None:
    """`.npy`: the (n, d) float32 array; any other name: JSONL {"input", "embedding"}."""
    if out.suffix != ".npy":
        write_lines(embedding_lines(requests, vectors), out)
        return
    with atomic_file(out, "wb") as handle:
        np.save(handle, np.asarray(vectors, dtype=np.float32))
