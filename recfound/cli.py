"""`recfound` command line: data sample, pipeline stages, generate/embed, serve, lineage.

Implementations are imported inside each command so `recfound --help` stays fast and a stage
only pays for the libraries it uses. Every command's failures end the same way: RecFoundErrors
and storage faults (disk full, read-only, permission) as one line naming the path and what to
do, the traceback only with --debug or RECFOUND_DEBUG=1.
"""

from __future__ import annotations

import importlib
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, NoReturn

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


class _ReportingGroup(TyperGroup):
    """The one place every command's unhandled RecFoundError or storage fault becomes `_fail`."""

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
    """Write the deterministic raw sample (all five source formats) into data/."""
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
    Path | None, typer.Option("--adapter", help="adapter dir (TMoLE or LoRA); none: base model")
]
TaskOption = Annotated[
    str, typer.Option("--task", help="task code, e.g. SR (generate), U2I (embed)")
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


def _requests(
    texts: list[str] | None, file: Path | None, instruction: str | None, task: str, cfg: Config
):
    """The requests from the arguments or --file, each with its instruction (the task's when
    none is given); empty input is an error naming the input."""
    from recfound.data.unified import build_instructions
    from recfound.model.inference import read_inputs, text_inputs, with_task_instruction

    if texts and file is not None:
        _usage_error("give either input texts or --file, not both")
    if not texts and file is None:
        _usage_error("no input: give input texts or --file FILE")
    requests = read_inputs(file) if file else text_inputs(texts, instruction)
    return with_task_instruction(requests, task, build_instructions(cfg.paths.unified))


@app.command()
def generate(
    texts: TextsArgument = None,
    task: TaskOption = ...,
    model: ModelOption = None,
    adapter: AdapterOption = None,
    file: FileOption = None,
    instruction: InstructionOption = None,
    out: Annotated[Path | None, typer.Option(help="write JSONL here (default: stdout)")] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Answer prompts with the model, routed to a generative task (greedy, batched)."""
    from recfound.model import inference

    cfg = load_config(params)
    requests = _requests(texts, file, instruction, task, cfg)
    answers = inference.generate_requests(
        requests, task, model or cfg.paths.base_model, adapter, cfg, notify=_note
    )
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
    file: FileOption = None,
    instruction: InstructionOption = None,
    out: Annotated[
        Path | None, typer.Option(help="write .npy (array) or .jsonl here (default: stdout JSONL)")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Embed texts with the model, routed to an embedding task (unit-norm vectors, batched)."""
    from recfound.model import inference

    cfg = load_config(params)
    requests = _requests(texts, file, instruction, task, cfg)
    vectors = inference.embed_requests(
        requests, task, model or cfg.paths.base_model, adapter, cfg, notify=_note
    )
    if out is None:
        typer.echo("\n".join(inference.embedding_lines(requests, vectors)))
        return
    inference.write_embeddings(requests, vectors, out)
    typer.echo(f"{len(requests)} embeddings written to {out}", err=True)


@app.command()
def recommend(
    user: Annotated[
        str | None, typer.Option(help="U2I: a user of the build (their history is the query)")
    ] = None,
    history: Annotated[
        list[str] | None,
        typer.Option(help="U2I: an item title of a history typed by hand (repeat, oldest first)"),
    ] = None,
    query: Annotated[str | None, typer.Option(help="Q2I: a search query")] = None,
    item: Annotated[str | None, typer.Option(help="I2I: a catalogue item id")] = None,
    k: Annotated[
        int | None, typer.Option("-k", help="items to return (default: index.top_k)")
    ] = None,
    include_seen: Annotated[
        bool, typer.Option(help="--user: keep items already in the user's history")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON, not a table")] = False,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Top k catalogue items for a user, a history, a query or an item (docs/recommend.md)."""
    from recfound.index.recommend import Recommender, text_query

    inputs = {"--user": user, "--history": history or None, "--query": query, "--item": item}
    if sum(value is not None for value in inputs.values()) != 1:
        _usage_error("give exactly one of --user, --history, --query, --item")
    if include_seen and user is None:
        _usage_error("--include-seen applies to --user only")
    cfg = load_config(params)
    recommender = Recommender(cfg)
    if user is not None:
        request = recommender.for_user(user, seen=include_seen)
    elif history:
        request = recommender.for_history(history)
    elif item is not None:
        request = recommender.for_item(item)
    else:
        request = text_query(query or "")
    result = recommender.recommend(request, cfg.index.top_k if k is None else k)
    if as_json:
        import json

        typer.echo(json.dumps(result.as_json(), ensure_ascii=False, indent=2))
        return
    typer.echo("\n".join(result.table()))


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


def main() -> None:  # pragma: no cover - console entry for `python -m recfound.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
