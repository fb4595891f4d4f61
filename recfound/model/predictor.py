"""The one way to ask a loaded RecFound model: `recfound generate` / `embed`, evaluation (every
LLM system), the registered MLflow model and the catalogue index all answer through a
`Predictor`, so a model is asked as it was trained and scored the same wherever it is asked.

- Task: a code, case-insensitive (`sa` is SA); an unknown code, a task of the other kind or
  one outside the model's task set is a `RecFoundError` naming the choices.
- Instruction: a request without one (None) gets the one its task was trained with (the
  build's build.json, else the standard wording); "" is an explicit "none".
- Generation: the prompt is fitted to `train.max_len_prompt` exactly as training fits it
  (`prompts.fit_prompt`: the start of the input dropped at a token boundary); a request whose
  instruction alone is over that budget is refused (training would have cut the template).
  Greedy, in batches of `evaluate.batch_size` prompts of similar length (longest first), at
  most `max_new_tokens` new tokens. In float32 the task's adapter delta is merged into the
  weights while it decodes (`export.merged_task_layers`: the base model's speed, equal up to
  float32 rounding); in bfloat16 the cast would round the delta away where it is small, so
  there the routed adapter decodes.
- Option scoring (`score_options`): the log-likelihood of each given answer after the same
  fitted prompt, routed and merged as generation is: answers decided among a row's options
  rather than decoded (recfound.evaluate.answer_modes).
- Embedding: a query (a text with an instruction) is cut to `train.max_len_query` tokens, a
  passage (instruction "") to `train.max_len_passage`, at the end, as training cuts them
  (`prompts.encode_embedding`); only a start of a long text is tokenised. Vectors are the
  model's, renormalised in float32 here and nowhere else: in bfloat16 a norm is off by up to
  ~0.5 % (8-bit mantissa), and in float32 a dot product is a cosine again.
- Every cut is counted; `notify` (when given) gets one line per call saying how many inputs
  were cut and to what.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from recfound.config import Config, TrainConfig
from recfound.data.instructions import default_instruction
from recfound.errors import RecFoundError
from recfound.model import prompts as fmt
from recfound.model.inference import (
    TextInput,
    embed_examples,
    generate_ids,
    load_recfound,
    option_log_likelihoods,
)
from recfound.tasks import Kind, Task, task_by_code

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from recfound.model.unified import RecFoundModel

# (texts, instruction) -> float32 unit vectors, one row per text
EmbedFn = Callable[[list[str], str], np.ndarray]
# Passages (pool items, catalogue items) are embedded without an instruction, as in training.
PASSAGE_INSTRUCTION = ""


@dataclass(frozen=True)
class InputLimits:
    """The token budgets training cut its inputs to (`train.max_len_*`)."""

    prompt: int
    query: int
    passage: int
    response: int

    @classmethod
    def of(cls, train: TrainConfig) -> InputLimits:
        return cls(
            train.max_len_prompt,
            train.max_len_query,
            train.max_len_passage,
            train.max_len_response,
        )

    def embedding(self, instruction: str) -> tuple[int, str]:
        """A query's budget when it has an instruction, a passage's when it has none, and the
        setting's name."""
        if instruction:
            return self.query, "train.max_len_query"
        return self.passage, "train.max_len_passage"


class InputError(RecFoundError):
    """A request the model cannot take as it is: `index` is its position (0-based) among the
    requests of the call, `reason` why."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"input {index + 1}: {reason}")
        self.index = index
        self.reason = reason


def resolve_task(
    code: str, kind: Kind | None = None, task_codes: Sequence[str] | None = None
) -> Task:
    """The task of `code`, in any case (`sa` is SA); RecFoundError for an unknown code, a task
    of another `kind`, or one outside `task_codes` (None: all 13)."""
    try:
        task = task_by_code(code)
    except KeyError as err:
        raise RecFoundError(err.args[0]) from None
    if kind is not None and task.kind != kind:
        wanted = "an embedding" if kind == Kind.EMBEDDING else "a generative"
        raise RecFoundError(
            f"task {task.code} is {task.kind.value}; this command needs {wanted} task"
        )
    if task_codes is not None and task.code not in task_codes:
        raise RecFoundError(
            f"task {task.code} is not one this model was trained on ({', '.join(task_codes)})"
        )
    return task


@dataclass(frozen=True)
class ModelChoice:
    """Which model answers: the base model alone, or with an adapter (the merged one by
    default, when the merge stage wrote one)."""

    base: Path
    adapter: Path | None = None
    merged: bool = False  # the adapter is paths.merged's

    def describe(self) -> str:
        """One line: `base DIR`, `merged ADAPTER (base DIR)` or `adapter ADAPTER (base DIR)`."""
        if self.adapter is None:
            return f"base {self.base}"
        kind = "merged" if self.merged else "adapter"
        return f"{kind} {self.adapter} (base {self.base})"


def choose_model(
    base: Path, adapter: Path | None, merged_adapter: Path | None, base_only: bool = False
) -> ModelChoice:
    """The adapter given, else the merged adapter when there is one (and `base_only` is not
    asked), else the base model alone."""
    if adapter is not None:
        return ModelChoice(Path(base), Path(adapter))
    if base_only or merged_adapter is None or not Path(merged_adapter).is_dir():
        return ModelChoice(Path(base))
    return ModelChoice(Path(base), Path(merged_adapter), merged=True)


@dataclass(frozen=True)
class Prompts:
    """Generation requests of one task, fitted to the prompt budget."""

    task: Task
    fitted: list[fmt.FittedPrompt]

    @property
    def cut(self) -> int:
        return sum(prompt.truncated for prompt in self.fitted)


@dataclass(frozen=True)
class Texts:
    """Embedding requests, encoded within their budgets."""

    examples: list[fmt.EmbeddingExample]
    budgets: tuple[str, ...]  # the budgets used, e.g. ("train.max_len_query=96",)

    @property
    def cut(self) -> int:
        return sum(example.truncated for example in self.examples)


class Predictor:
    """A loaded model (base + optional adapter) and the rules it is asked by (module doc)."""

    def __init__(
        self,
        model: RecFoundModel,
        tokenizer: PreTrainedTokenizerBase,
        cfg: Config,
        *,
        instructions: Mapping[str, str] | None = None,
        task_codes: Sequence[str] | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        """`instructions`: build.json's trained instruction per task ({}: the standard ones);
        `task_codes`: the tasks the model may be asked (None: all 13)."""
        self.model = model
        self.tokenizer = tokenizer
        self.limits = InputLimits.of(cfg.train)
        self.batch_size = cfg.evaluate.batch_size
        self.max_new_tokens = cfg.evaluate.max_new_tokens
        self.instructions = dict(instructions or {})
        self.task_codes = tuple(task_codes) if task_codes is not None else None
        self.notify = notify

    @classmethod
    def load(
        cls,
        cfg: Config,
        base_dir: str | Path,
        adapter_dir: str | Path | None = None,
        device: torch.device | str | None = None,
        **options,
    ) -> Predictor:
        """Load base (+ adapter) in the dtype `model.dtype` resolves to on `device`."""
        model, tokenizer = load_recfound(base_dir, adapter_dir, cfg, device)
        return cls(model, tokenizer, cfg, **options)

    # --- what is asked ----------------------------------------------------------------------

    def task(self, code: str, kind: Kind | None = None) -> Task:
        """`resolve_task` within the model's task set."""
        return resolve_task(code, kind, self.task_codes)

    def with_instructions(self, task: Task, requests: Sequence[TextInput]) -> list[TextInput]:
        """The requests, those without an instruction given `task`'s trained one."""
        default = default_instruction(task.code, self.instructions)
        return [
            r if r.instruction is not None else replace(r, instruction=default) for r in requests
        ]

    @property
    def routes_tasks(self) -> bool:
        """Whether answers depend on the task (an adapter routes them); the base model's do
        not, so one catalogue embedding serves every task."""
        return self.model.adapter is not None

    def _note(self, cut: int, total: int, what: str) -> None:
        if cut and self.notify is not None:
            self.notify(f"{cut} of {total} inputs cut to {what}")

    # --- generation -------------------------------------------------------------------------

    def prompts(self, task: Task, requests: Sequence[TextInput]) -> Prompts:
        """The requests' prompts fitted to `train.max_len_prompt`; InputError naming the first
        request whose instruction alone is over it."""
        budget = self.limits.prompt
        fitted = []
        for index, request in enumerate(self.with_instructions(task, requests)):
            prompt = fmt.fit_prompt(self.tokenizer, request.instruction, request.input, budget)
            if len(prompt.input_ids) > budget:
                raise InputError(
                    index,
                    f"its instruction alone makes a {len(prompt.input_ids)}-token prompt, over "
                    f"train.max_len_prompt={budget}; shorten the instruction",
                )
            fitted.append(prompt)
        return Prompts(task, fitted)

    def decode(
        self, prompts: Prompts, max_new_tokens: int | None = None, progress: bool = False
    ) -> list[str]:
        """Greedy answers to fitted prompts, in order (module doc: batching, merging)."""
        self._note(
            prompts.cut,
            len(prompts.fitted),
            f"fit train.max_len_prompt={self.limits.prompt} tokens (the start of each was dropped)",
        )
        with self.decoding(prompts.task):
            return generate_ids(
                self.model,
                self.tokenizer,
                [prompt.input_ids for prompt in prompts.fitted],
                prompts.task.id,
                max_new_tokens or self.max_new_tokens,
                self.batch_size,
                progress,
            )

    def generate(
        self,
        task: Task,
        requests: Sequence[TextInput],
        max_new_tokens: int | None = None,
        progress: bool = False,
    ) -> list[str]:
        """Answers to `requests` routed to generative `task` (`prompts`, then `decode`)."""
        return self.decode(self.prompts(task, requests), max_new_tokens, progress)

    def score_options(
        self,
        task: Task,
        requests: Sequence[TextInput],
        options: Sequence[Sequence[str]],
        per_token: bool = False,
        progress: bool = False,
    ) -> list[np.ndarray]:
        """Per request, the log-likelihood of each of its `options` as the answer: float64,
        one entry per option, in order (higher = likelier).

        An option's likelihood is that of its training target after the request's fitted
        prompt (`prompts` as `generate` fits it): `prompts.with_response`, i.e. the option as
        the chat template renders an assistant turn, end-of-turn marks included, cut to
        `train.max_len_response` tokens; Σ_t log p(token_t | prompt, tokens_<t) by teacher
        forcing. The end-of-turn marks count, so "B" scores the answer "B" and nothing more
        (not the start of "B. Running shoes"). Routed to `task` and merged in float32 exactly
        as `decode` is (`decoding`); each prompt runs once and its options together after
        its cached keys and values, in batches of `evaluate.batch_size`
        (`inference.option_log_likelihoods`).

        Not length-normalised by default: a label (a letter, yes/no) is one token plus the
        same end-of-turn marks for every option, so the sum compares like with like and is the
        probability of the whole answer. `per_token` gives the mean per response token
        instead, for options of unequal length (SR candidate titles), where a sum would favour
        the shortest text over the most likely one.
        """
        if len(options) != len(requests):
            raise ValueError(f"{len(options)} option lists for {len(requests)} requests")
        asked = self.with_instructions(task, requests)
        prompts = self.prompts(task, asked)
        self._note(
            prompts.cut,
            len(prompts.fitted),
            f"fit train.max_len_prompt={self.limits.prompt} tokens (the start of each was dropped)",
        )
        answers = []
        for index, (request, texts) in enumerate(zip(asked, options, strict=True)):
            if not texts:
                raise InputError(index, "no options to score")
            answers.append(
                [
                    fmt.response_ids(
                        self.tokenizer,
                        request.instruction,
                        request.input,
                        text,
                        self.limits.response,
                    )
                    for text in texts
                ]
            )
        with self.decoding(task):
            sums = option_log_likelihoods(
                self.model,
                self.tokenizer,
                [prompt.input_ids for prompt in prompts.fitted],
                answers,
                task.id,
                self.batch_size,
                progress,
            )
        if not per_token:
            return sums
        return [
            row / np.array([len(a) for a in ids]) for row, ids in zip(sums, answers, strict=True)
        ]

    @property
    def merges_for_decoding(self) -> bool:
        """Whether a task's delta is merged into the weights while it decodes: with an adapter,
        in float32 only (module doc)."""
        weights = self.model.lm.get_input_embeddings().weight
        return self.model.adapter is not None and weights.dtype == torch.float32

    @contextmanager
    def decoding(self, task: Task) -> Iterator[None]:
        """The block in which `task` decodes: merged into the weights when exact, else as is."""
        if self.merges_for_decoding:
            from recfound.model.export import merged_task_layers

            with merged_task_layers(self.model.lm, self.model.adapter, task.id):
                yield
        else:
            yield

    # --- embedding --------------------------------------------------------------------------

    def texts(self, requests: Sequence[TextInput]) -> Texts:
        """The requests encoded within their budgets (query or passage, by instruction); each
        request must carry its instruction (`with_instructions`). InputError naming the first
        whose instruction leaves no room for its text."""
        examples, budgets = [], set()
        for index, request in enumerate(requests):
            if request.instruction is None:
                raise ValueError(f"input {index + 1} has no instruction: fill them in first")
            budget, setting = self.limits.embedding(request.instruction)
            budgets.add(f"{setting}={budget}")
            try:
                examples.append(
                    fmt.encode_embedding(self.tokenizer, request.instruction, request.input, budget)
                )
            except ValueError as err:  # an instruction that leaves no room for the text
                raise InputError(index, str(err)) from None
        return Texts(examples, tuple(sorted(budgets)))

    def vectors(
        self,
        task: Task,
        texts: Texts,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """(n, d) float32 unit vectors of encoded texts routed to `task`, in order."""
        what = " / ".join(texts.budgets)
        self._note(texts.cut, len(texts.examples), f"{what} tokens (the end of each was dropped)")
        vectors = embed_examples(
            self.model,
            self.tokenizer,
            texts.examples,
            task.id,
            batch_size or self.batch_size,
            progress,
        )
        return unit_float32(vectors)

    def embed(
        self,
        task: Task,
        requests: Sequence[TextInput],
        batch_size: int | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Unit vectors of `requests` routed to embedding `task` (instructions filled in)."""
        texts = self.texts(self.with_instructions(task, requests))
        return self.vectors(task, texts, batch_size, progress)

    def embedder(
        self, task: Task, batch_size: int | None = None, progress: bool = False
    ) -> EmbedFn:
        """`embed` as (texts, instruction) -> vectors: what pool scoring, the catalogue index
        and retrieval call."""

        def embed(texts: list[str], instruction: str) -> np.ndarray:
            requests = [TextInput(text, instruction) for text in texts]
            return self.embed(task, requests, batch_size, progress)

        return embed


def unit_float32(vectors: torch.Tensor) -> np.ndarray:
    """Rows renormalised in float32, as a numpy array: the one place embeddings are
    normalised for scoring, retrieval and answers (module doc)."""
    return torch.nn.functional.normalize(vectors.float(), dim=-1).numpy()
