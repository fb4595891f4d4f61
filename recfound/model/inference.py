"""Batched inference with a RecFound model: load, generate, embed; the CLI's library half.

Evaluation and `recfound generate` / `recfound embed` share these functions, so a model answers
the same way whether it is scored or asked by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from recfound.atomic import atomic_file
from recfound.config import Config
from recfound.data.instructions import default_instruction
from recfound.data.readers.common import iter_json_objects, iter_lines
from recfound.errors import DataError, RecFoundError
from recfound.model import prompts as fmt
from recfound.model.unified import RecFoundModel, resolve_dtype
from recfound.progress import progress as progress_bar


@dataclass(frozen=True)
class TextInput:
    """One request: the task input (or text to embed) and its instruction.

    None: the request gave none, and `with_task_instruction` supplies the task's; "" is an
    explicit "no instruction" (e.g. an embedding passage, GritLM style).
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


def generate_batch(
    model: RecFoundModel,
    tokenizer,
    prompts: Sequence[str],
    task_id: int,
    max_new_tokens: int,
    batch_size: int,
    progress: bool = True,
) -> list[str]:
    """Greedy responses, in order, to complete prompt strings (`prompts.generation_prompt`).

    Prompts are left-padded in batches of `batch_size`; every sample is routed to `task_id`.
    """
    lengths = [len(fmt.token_ids(tokenizer, p)) for p in prompts]
    order = _longest_first(lengths)
    device = _device_of(model)
    answers: list[str] = [""] * len(prompts)
    bar = progress_bar(
        total=len(prompts), desc="generate", unit="prompt", leave=None, disable=not progress
    )
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = fmt.collate_prompts(tokenizer, [prompts[i] for i in chunk], tokenizer.pad_token_id)
        batch = {name: tensor.to(device) for name, tensor in batch.items()}
        new_tokens = model.generate(
            batch["input_ids"],
            batch["attention_mask"],
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


def embedding_max_len(model: RecFoundModel, tokenizer) -> int:
    """The longest input the model and tokenizer both accept."""
    return min(tokenizer.model_max_length, model.lm.config.max_position_embeddings)


@torch.no_grad()
def embed_examples(
    model: RecFoundModel,
    tokenizer,
    examples: Sequence[fmt.EmbeddingExample],
    task_id: int,
    batch_size: int,
    progress: bool = True,
) -> torch.Tensor:
    """Unit-norm embeddings (len(examples), d) of encoded inputs, on the CPU as float32."""
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


def embed_texts(
    model: RecFoundModel,
    tokenizer,
    texts: Sequence[str],
    instruction: str,
    task_id: int,
    batch_size: int,
    max_len: int | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Unit-norm embeddings (len(texts), d) on the CPU, as float32 (numpy has no bfloat16).

    Queries take their task's instruction; passages take `instruction=""` (GritLM style).
    Texts longer than `max_len` tokens (default: the model's limit) are cut at the end, by the
    tokenizer, before the model runs.
    """
    max_len = max_len or embedding_max_len(model, tokenizer)
    examples = [fmt.encode_embedding(tokenizer, instruction, t, max_len) for t in texts]
    return embed_examples(model, tokenizer, examples, task_id, batch_size, progress)


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


def with_task_instruction(
    requests: Sequence[TextInput], task_code: str, trained: Mapping[str, str]
) -> list[TextInput]:
    """The requests, those without an instruction given the task's: the one it was trained
    with (`trained`: build.json's `instructions`), else its standard one. A model asked
    without its task's instruction answers off its training distribution."""
    default = default_instruction(task_code, trained)
    return [r if r.instruction is not None else replace(r, instruction=default) for r in requests]


def _task_of_kind(code: str, embedding: bool):
    from recfound.tasks import task_by_code

    try:
        task = task_by_code(code)
    except KeyError as err:
        raise RecFoundError(err.args[0]) from None
    if task.is_embedding != embedding:
        wanted = "an embedding" if embedding else "a generative"
        raise RecFoundError(
            f"task {task.code} is {task.kind.value}; this command needs {wanted} task"
        )
    return task


def generate_requests(
    requests: Sequence[TextInput],
    task_code: str,
    model_dir: str | Path,
    adapter_dir: str | Path | None,
    cfg: Config,
    notify: Callable[[str], None] | None = None,
) -> list[str]:
    """Load the model and answer each request with the chat-formatted prompt of `task_code`.

    Each prompt is fitted to `train.max_len_prompt`, the budget the model was trained with, by
    dropping the start of its input (`prompts.fit_prompt`); `notify` gets one line saying how
    many inputs were cut. A request whose instruction alone is over the budget is an error.
    """
    task = _task_of_kind(task_code, embedding=False)
    model, tokenizer = load_recfound(model_dir, adapter_dir, cfg)
    budget = cfg.train.max_len_prompt
    fitted = [fmt.fit_prompt(tokenizer, r.instruction, r.input, budget) for r in requests]
    for number, prompt in enumerate(fitted, start=1):
        if len(prompt.input_ids) > budget:
            raise RecFoundError(
                f"input {number}: its instruction alone makes a {len(prompt.input_ids)}-token "
                f"prompt, over train.max_len_prompt={budget}; shorten the instruction"
            )
    cut = sum(prompt.truncated for prompt in fitted)
    if cut and notify:
        notify(
            f"{cut} of {len(requests)} inputs cut to fit train.max_len_prompt={budget} tokens "
            "(the start of each was dropped)"
        )
    return generate_batch(
        model,
        tokenizer,
        [prompt.text for prompt in fitted],
        task.id,
        cfg.evaluate.max_new_tokens,
        cfg.evaluate.batch_size,
    )


def embed_requests(
    requests: Sequence[TextInput],
    task_code: str,
    model_dir: str | Path,
    adapter_dir: str | Path | None,
    cfg: Config,
    notify: Callable[[str], None] | None = None,
) -> torch.Tensor:
    """Load the model and embed each request (its instruction excluded from the pooled vector).

    Inputs are cut at the end to the model's limit (`embedding_max_len`) before the model runs;
    `notify` gets one line saying how many were cut.
    """
    task = _task_of_kind(task_code, embedding=True)
    model, tokenizer = load_recfound(model_dir, adapter_dir, cfg)
    max_len = embedding_max_len(model, tokenizer)
    examples = []
    for number, request in enumerate(requests, start=1):
        try:
            examples.append(
                fmt.encode_embedding(tokenizer, request.instruction, request.input, max_len)
            )
        except ValueError as err:  # an instruction that leaves no room for the text
            raise RecFoundError(f"input {number}: {err}") from None
    cut = sum(example.truncated for example in examples)
    if cut and notify:
        notify(
            f"{cut} of {len(requests)} inputs cut to the model's limit of {max_len} tokens "
            "(the end of each was dropped)"
        )
    # Each example carries its own instruction and pool mask, so one batch can mix them.
    return embed_examples(model, tokenizer, examples, task.id, cfg.evaluate.batch_size)


def generation_lines(requests: Sequence[TextInput], answers: Sequence[str]) -> list[str]:
    """One JSON object {"instruction", "input", "output"} per request."""
    return [
        json.dumps(
            {"instruction": r.instruction, "input": r.input, "output": a}, ensure_ascii=False
        )
        for r, a in zip(requests, answers, strict=True)
    ]


def embedding_lines(requests: Sequence[TextInput], vectors: torch.Tensor) -> list[str]:
    """One JSON object {"input", "embedding"} per request."""
    return [
        json.dumps({"input": r.input, "embedding": v}, ensure_ascii=False)
        for r, v in zip(requests, vectors.tolist(), strict=True)
    ]


def write_lines(lines: Sequence[str], out: Path) -> None:
    """Write `lines` as a text file (one per line), atomically."""
    with atomic_file(out) as handle:
        handle.writelines(line + "\n" for line in lines)


def write_embeddings(requests: Sequence[TextInput], vectors: torch.Tensor, out: Path) -> None:
    """`.npy`: the (n, d) float32 array; any other name: JSONL {"input", "embedding"}."""
    if out.suffix != ".npy":
        write_lines(embedding_lines(requests, vectors), out)
        return
    import numpy as np

    with atomic_file(out, "wb") as handle:
        np.save(handle, vectors.numpy())
