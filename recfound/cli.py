"""`recfound` command line: data sample, pipeline stages, generate/embed, serve, lineage.

Implementations are imported inside each command so `recfound --help` stays fast and a stage
only pays for the libraries it uses. Every command's failures end the same way: RecFoundErrors
and storage faults (disk full, read-only, permission) as one line naming the path and what to
do, the traceback only with --debug or RECFOUND_DEBUG=1.
"""

from __future__ import annotations

import importlib
import inspect
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import click
import typer
from typer.core import TyperGroup

# lifeline first: it notes who launched this process, as early as possible (see there)
from recfound import lifeline
from recfound.config import Config, load_config
from recfound.errors import (
    RecFoundError,
    StageTerminated,
    setting_for,
    storage_errno,
    storage_message,
)
from recfound.locks import stage_lock
from recfound.stages import check_outs_inside, entry_points

DEBUG_ENV = "RECFOUND_DEBUG"
_DEBUG_KEY = "recfound.debug"  # in click's ctx.meta, shared by every nested context
_PARAMS_KEY = "recfound.params"


def reflow(text: str | None) -> str | None:
    """`text` with each paragraph on one line, for the help renderer to wrap at the width.

    Docstrings and help strings are wrapped at ~100 columns in the source; typer's renderer
    keeps their line breaks and wraps again at the terminal's width, which at 80 columns breaks
    a line mid-sentence. Paragraphs (blank-line separated) stay apart, and so do list items
    ("- ...") and a click `\\b` paragraph (kept as written)."""
    if not text:
        return text
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        if paragraph.startswith("\b"):
            paragraphs.append(paragraph)
            continue
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not line.lstrip().startswith("- "):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line.strip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _reflow_help(command: click.Command) -> None:
    """`reflow` the help of `command` and of every command under it."""
    command.help = reflow(command.help)
    for sub in getattr(command, "commands", {}).values():
        _reflow_help(sub)


class _ReportingGroup(TyperGroup):
    """The one place every command's unhandled RecFoundError or storage fault becomes `_fail`,
    and every command's help is reflowed to the terminal's width (`reflow`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _reflow_help(self)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RecFoundError as err:
            _fail(err, ctx)
        except Exception as err:
            if storage_errno(err) is None:
                raise
            _fail(err, ctx)


USER_HELP = """RecFound: train, evaluate and use one LLM for generative and embedding
recommendation tasks.

`make repro` (or `dvc repro`) runs the pipeline; the commands below run one stage, ask the
trained model (generate, embed, recommend), serve it, and trace a model to its data. A failure
prints one line saying what went wrong and what to do; --debug shows the traceback. Guides:
README.md and docs/.
"""
app = typer.Typer(add_completion=False, no_args_is_help=True, help=USER_HELP, cls=_ReportingGroup)
data_app = typer.Typer(no_args_is_help=True, help="Raw data: the seeded sample.")
app.add_typer(data_app, name="data")

# Stage name -> "module:function", from the stage contract: dvc.yaml's cmd and the Prefect
# flow both end up here.
STAGES: dict[str, str] = entry_points()


def _remember_params(ctx: click.Context, value: Path) -> Path:
    # Lets an error name the params.yaml key that chose a failing path.
    ctx.meta[_PARAMS_KEY] = value
    return value


ParamsOption = Annotated[
    Path, typer.Option("--params", help="params.yaml to read", callback=_remember_params)
]


@app.callback()
def _global_options(
    ctx: typer.Context,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar=DEBUG_ENV,
            help=f"show the traceback of a failure (also {DEBUG_ENV}=1); without it a failure "
            "is one line: what went wrong, where, and what to do",
        ),
    ] = False,
) -> None:
    ctx.meta[_DEBUG_KEY] = debug
    from recfound.progress import route_library_bars

    route_library_bars()  # before any library draws a bar: no `\r` in a log file


def _path_settings(meta: dict[str, Any]) -> dict[str, Path]:
    """`paths.*` of the command's params.yaml, {} when it cannot be read (it may be the fault)."""
    try:
        cfg = load_config(meta.get(_PARAMS_KEY, Path("params.yaml")))
    except Exception:
        return {}
    return {f"paths.{name}": path for name, path in cfg.paths}


def _message(err: BaseException, meta: dict[str, Any]) -> str:
    """One line for a person; storage faults get the path and the advice (recfound.errors)."""
    if storage_errno(err) is None:
        return str(err)
    path = getattr(err, "filename", None)
    return storage_message(err, setting_for(path, _path_settings(meta)) if path else None)


def _fail(err: BaseException, ctx: click.Context | None = None) -> NoReturn:
    """Print `err` as one line (after its traceback with --debug) and exit 1."""
    ctx = ctx or click.get_current_context(silent=True)
    meta = ctx.meta if ctx is not None else {}
    if meta.get(_DEBUG_KEY):
        typer.echo("".join(traceback.format_exception(err)).rstrip(), err=True)
    typer.secho(f"error: {_message(err, meta)}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=1)


def _resolve(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help=f"one of: {', '.join(STAGES)}")],
    params: ParamsOption = Path("params.yaml"),
    raw_only: Annotated[
        bool,
        typer.Option(
            "--raw-only",
            help="validate only: run the raw-file suites, no built dataset needed "
            "(writes paths.validation_raw; not a pipeline stage, not tracked)",
        ),
    ] = False,
) -> None:
    """Run one pipeline stage (what dvc.yaml and the Prefect flow call), as one MLflow run."""
    if name not in STAGES:
        _fail(ValueError(f"unknown stage {name!r}; expected one of {', '.join(STAGES)}"))
    if raw_only and name != "validate":
        _fail(ValueError("--raw-only applies to the validate stage only"))
    try:
        cfg = load_config(params)
        if not raw_only:  # before the work, not after it: DVC saves outputs inside the repo only
            check_outs_inside(".", name, cfg)
        # one writer per workspace: ends with its launcher (dvc), holds the stage lock
        with (
            lifeline.tied_to_launcher(cfg.workspace.launcher_poll_s),
            stage_lock(cfg, name, notify=_note),
        ):
            if raw_only:
                from recfound.data.validate import run as validate_raw

                validate_raw(cfg, raw_only=True)
                return
            from recfound.tracking.mlflow_run import stage_run

            with stage_run(cfg, name, params_path=params):
                _resolve(STAGES[name])(cfg)
    except StageTerminated as err:
        typer.secho(f"error: stage {name} stopped: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=128 + signal.SIGTERM) from None


@data_app.command("sample")
def data_sample(
    out: Annotated[Path | None, typer.Option(help="output dir (default: paths.data)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed (default: sample.seed)")] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Write the deterministic raw sample into data/: five of the six source formats, all
    but Amazon Reviews 2014/2018 (docs/data-formats.md)."""
    from recfound.data.sample import write_sample

    cfg = load_config(params)
    sample_cfg = cfg.sample if seed is None else cfg.sample.model_copy(update={"seed": seed})
    target = write_sample(out or cfg.paths.data, sample_cfg)
    typer.echo(f"sample written to {target}")


@data_app.command("ensure")
def data_ensure(params: ParamsOption = Path("params.yaml")) -> None:
    """Generate the sample only when the data directory is absent (fresh clone)."""
    cfg = load_config(params)
    if cfg.paths.data.exists() and any(cfg.paths.data.iterdir()):
        typer.echo(f"{cfg.paths.data} present; leaving it as it is")
        return
    data_sample(out=None, seed=None, params=params)


ModelOption = Annotated[
    Path | None, typer.Option("--model", help="base model dir (default: paths.base_model)")
]
AdapterOption = Annotated[
    Path | None,
    typer.Option(
        "--adapter",
        help="adapter dir (TMoLE or LoRA); default: the merged model when the merge stage "
        "wrote one and --model is not given, else none",
    ),
]
BaseOnlyOption = Annotated[
    bool, typer.Option("--base-only", help="answer with the base model alone, no adapter")
]
TaskOption = Annotated[
    str, typer.Option("--task", help="task code, any case, e.g. SR (generate), U2I (embed)")
]
TextsArgument = Annotated[list[str] | None, typer.Argument(help="inputs (or use --file)")]
FileOption = Annotated[
    Path | None,
    typer.Option("--file", help="inputs: .jsonl of {input, instruction?}, else one per line"),
]
InstructionOption = Annotated[
    str | None,
    typer.Option(
        "--instruction",
        help="instruction for the positional inputs (default: the one the task was trained "
        'with; "" for none)',
    ),
]


def _usage_error(message: str) -> None:
    # One line, like _fail, but exit code 2: the command line itself is wrong.
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=2)


def _note(message: str) -> None:
    typer.secho(f"note: {message}", err=True, fg=typer.colors.YELLOW)


def _requests(texts: list[str] | None, file: Path | None, instruction: str | None):
    """The requests from the arguments or --file; empty input is an error naming the input."""
    from recfound.model.inference import read_inputs, text_inputs

    if texts and file is not None:
        _usage_error("give either input texts or --file, not both")
    if not texts and file is None:
        _usage_error("no input: give input texts or --file FILE")
    return read_inputs(file) if file else text_inputs(texts, instruction)


def _predictor(cfg: Config, model: Path | None, adapter: Path | None, base_only: bool):
    """The model `generate` / `embed` answer with, said in one line on stderr: the adapter
    given, else the merged model when there is one (as `recommend`), else the base model."""
    from recfound.data.unified import build_instructions
    from recfound.merge.layout import merged_adapter_dir
    from recfound.model.predictor import Predictor, choose_model

    if base_only and adapter is not None:
        _usage_error("--base-only and --adapter exclude each other")
    # another base model than the one the merge stage trained on takes no merged adapter
    merged = merged_adapter_dir(cfg) if model is None else None
    choice = choose_model(model or cfg.paths.base_model, adapter, merged, base_only)
    typer.echo(f"model: {choice.describe()}", err=True)
    return Predictor.load(
        cfg,
        choice.base,
        choice.adapter,
        instructions=build_instructions(cfg.paths.unified),
        notify=_note,
    )


@app.command()
def generate(
    texts: TextsArgument = None,
    task: TaskOption = ...,
    model: ModelOption = None,
    adapter: AdapterOption = None,
    base_only: BaseOnlyOption = False,
    file: FileOption = None,
    instruction: InstructionOption = None,
    out: Annotated[Path | None, typer.Option(help="write JSONL here (default: stdout)")] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Answer prompts with the model, routed to a generative task (greedy, batched)."""
    from recfound.model import inference
    from recfound.model.predictor import resolve_task
    from recfound.tasks import Kind

    cfg = load_config(params)
    requests = _requests(texts, file, instruction)
    chosen = resolve_task(task, Kind.GENERATIVE)  # before the model loads: a typo fails at once
    predictor = _predictor(cfg, model, adapter, base_only)
    requests = predictor.with_instructions(chosen, requests)
    answers = predictor.generate(chosen, requests, progress=True)
    lines = inference.generation_lines(requests, answers)
    if out is None:
        typer.echo("\n".join(lines))
        return
    inference.write_lines(lines, out)
    typer.echo(f"{len(lines)} generations written to {out}", err=True)


@app.command()
def embed(
    texts: TextsArgument = None,
    task: TaskOption = ...,
    model: ModelOption = None,
    adapter: AdapterOption = None,
    base_only: BaseOnlyOption = False,
    file: FileOption = None,
    instruction: InstructionOption = None,
    out: Annotated[
        Path | None, typer.Option(help="write .npy (array) or .jsonl here (default: stdout JSONL)")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Embed texts with the model, routed to an embedding task (unit-norm vectors, batched)."""
    from recfound.model import inference
    from recfound.model.predictor import resolve_task
    from recfound.tasks import Kind

    cfg = load_config(params)
    requests = _requests(texts, file, instruction)
    chosen = resolve_task(task, Kind.EMBEDDING)  # before the model loads: a typo fails at once
    predictor = _predictor(cfg, model, adapter, base_only)
    requests = predictor.with_instructions(chosen, requests)
    vectors = predictor.embed(chosen, requests, progress=True)
    if out is None:
        typer.echo("\n".join(inference.embedding_lines(requests, vectors)))
        return
    inference.write_embeddings(requests, vectors, out)
    typer.echo(f"{len(requests)} embeddings written to {out}", err=True)


# Ids `recfound recommend --list` prints unless --limit says otherwise (0: all of them).
LIST_LIMIT = 20


@app.command()
def recommend(
    user: Annotated[
        str | None,
        typer.Option(metavar="ID", help="U2I: a user of the build; their history is the query"),
    ] = None,
    history: Annotated[
        list[str] | None,
        typer.Option(
            metavar="TITLE", help="U2I: one title of a history typed by hand; repeat, oldest first"
        ),
    ] = None,
    query: Annotated[
        str | None,
        typer.Option(metavar="TEXT", help="Q2I: a search query (cut to serve.max_input_chars)"),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            metavar="FILE",
            help="Q2I: queries, one per line, or .jsonl of {input, instruction?}",
        ),
    ] = None,
    item: Annotated[str | None, typer.Option(metavar="ID", help="I2I: a catalogue item id")] = None,
    list_kind: Annotated[
        Literal["users", "items"] | None,
        typer.Option("--list", help="print valid --user or --item ids and their count"),
    ] = None,
    limit: Annotated[
        int, typer.Option(metavar="N", help="--list: ids to print (0: all)")
    ] = LIST_LIMIT,
    k: Annotated[
        int | None, typer.Option("-k", metavar="N", help="items to return (default: index.top_k)")
    ] = None,
    include_seen: Annotated[
        bool, typer.Option("--include-seen", help="--user: keep items already in the history")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="print JSON (with --file: one line per query)")
    ] = False,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Top k catalogue items for a user, a history, a query or an item (docs/recommend.md)."""
    import json

    from recfound.index.recommend import Recommender, cut_note

    inputs = {
        "--user": user,
        "--history": history or None,
        "--query": query,
        "--file": file,
        "--item": item,
        "--list": list_kind,
    }
    if sum(value is not None for value in inputs.values()) != 1:
        _usage_error(f"give exactly one of {', '.join(inputs)}")
    if include_seen and user is None:
        _usage_error("--include-seen applies to --user only")
    if limit != LIST_LIMIT and list_kind is None:
        _usage_error("--limit applies to --list only")
    cfg = load_config(params)
    recommender = Recommender(cfg, notify=_note)  # the predictor's notes: a query cut
    if list_kind is not None:
        listed = recommender.list_ids(list_kind, limit)
        text = json.dumps(listed.as_json(), ensure_ascii=False, indent=2) if as_json else None
        typer.echo(text or "\n".join(listed.table()))
        return
    if file is not None:
        from recfound.model.inference import read_inputs

        asked = [recommender.for_query(r.input, r.instruction) for r in read_inputs(file)]
    elif user is not None:
        asked = [recommender.for_user(user, seen=include_seen)]
    elif history:
        asked = [recommender.for_history(history)]
    elif item is not None:
        asked = [recommender.for_item(item)]
    else:
        asked = [recommender.for_query(query or "")]
    for number, request in enumerate(asked, start=1):
        if request.cut:
            where = f"{file}: query {number}" if file is not None else "the query"
            _note(cut_note(request, cfg.serve.max_input_chars, where))
    results = recommender.recommend_all(asked, cfg.index.top_k if k is None else k)
    if as_json and file is not None:
        lines = [json.dumps(r.as_json(), ensure_ascii=False) for r in results]
        typer.echo("\n".join(lines))
    elif as_json:
        typer.echo(json.dumps(results[0].as_json(), ensure_ascii=False, indent=2))
    else:
        typer.echo("\n\n".join("\n".join(r.table()) for r in results))


@app.command()
def lineage(
    model: Annotated[str, typer.Argument(help="registered model version, e.g. recfound/3")],
    repo: Annotated[Path, typer.Option(help="git repository the runs came from")] = Path("."),
    strict: Annotated[bool, typer.Option(help="exit 1 when anything is UNTRACED")] = False,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Model version -> runs -> data hash -> git commit -> params; flags what is UNTRACED."""
    from mlflow.tracking import MlflowClient

    from recfound.tracking import lineage as lin
    from recfound.tracking.mlflow_run import tracking_uri

    cfg = load_config(params)
    report = lin.trace(MlflowClient(tracking_uri(cfg)), model, repo)
    for line in lin.render(report):
        untraced = line.lstrip().startswith(lin.UNTRACED)
        typer.secho(line, fg=typer.colors.RED if untraced else None)
    if strict and report.all_problems():
        raise typer.Exit(code=1)


@app.command()
def serve(params: ParamsOption = Path("params.yaml")) -> None:
    """Start Prefect server, MLflow UI and the deployments' serving process; Ctrl-C stops."""
    from recfound.serve import serve_all

    serve_all(load_config(params))


@app.command()
def ablate(
    variant: Annotated[
        list[str] | None,
        typer.Option("--variant", help="no_s2sched | no_tmole | multitask_lora (repeatable)"),
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Train + evaluate the ablation variants (paper Table 4) into reports/variants/<name>/."""
    from recfound.evaluate.ablate import ablate as run_ablation

    run_ablation(load_config(params), variant)


@app.command()
def plan(
    model_config: Annotated[
        Path | None,
        typer.Option(
            "--model-config",
            help="the base model's directory or config.json (default: model.base's, when it is "
            "a local directory); no weights are read",
        ),
    ] = None,
    gpus: Annotated[int, typer.Option("--gpus", min=1, help="GPUs training together")] = 1,
    strategy: Annotated[
        Literal["ddp", "fsdp"],
        typer.Option("--strategy", help="ddp: every GPU holds the model; fsdp: sharded over them"),
    ] = "ddp",
    gpu_memory_gib: Annotated[
        float, typer.Option("--gpu-memory-gib", min=1, help="memory of one GPU")
    ] = 80.0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the plan as JSON here")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Per-GPU memory of the training run params.yaml describes, before the run, from the model's
    config alone: weights, adapter, gradients, AdamW, activations (measured on fake tensors),
    GradCache; whether it fits, the largest micro-batch that does, and what does not fit the
    model (docs/training.md, "Paper scale")."""
    from recfound.model.fit import fit_problems
    from recfound.train import plan as memory

    cfg = load_config(params)
    architecture = memory.resolve_model_config(cfg, model_config)
    result = memory.plan_memory(
        cfg, architecture, gpus, strategy, gpu_memory_gib, fit_problems(cfg, architecture)
    )
    typer.echo(memory.format_plan(result, cfg))
    if json_out is not None:
        typer.echo(f"wrote {memory.write_plan_json(result, json_out)}", err=True)


@app.command()
def contract(
    write: Annotated[
        bool, typer.Option("--write", help="write dvc.yaml from the stage contract")
    ] = False,
    check: Annotated[
        bool,
        typer.Option("--check", help="exit 1, naming each difference, unless it is"),
    ] = False,
) -> None:
    """dvc.yaml from the stage contract (recfound/stages.py): print it, --write it, or --check
    that the committed one is what the contract generates."""
    from recfound import dvc_yaml

    if write and check:
        _usage_error("choose one of --write and --check")
    if check:
        differences = dvc_yaml.check()
        if differences:
            typer.echo("\n".join(differences), err=True)
            _fail(RecFoundError("dvc.yaml is not what the contract generates: `--write` it"))
        typer.echo("dvc.yaml is the one the stage contract generates")
    elif write:
        typer.echo(f"wrote {dvc_yaml.write()}")
    else:
        typer.echo(dvc_yaml.render(), nl=False)


def main() -> None:  # pragma: no cover - console entry for `python -m recfound.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
