"""`recfound` command line: data sample, pipeline stages, generate/embed, serve, lineage.

Implementations are imported inside each command so `recfound --help` stays fast and a stage
only pays for the libraries it uses.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from recfound.config import load_config
from recfound.errors import RecFoundError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="Raw data: the seeded sample.")
app.add_typer(data_app, name="data")

# One definition per stage: dvc.yaml's cmd and the Prefect flow both end up here.
STAGES: dict[str, str] = {
    "base_model": "recfound.model.base_model:run",
    "build": "recfound.data.build:run",
    "validate": "recfound.data.validate:run",
    "train": "recfound.train.stage:run",
    "merge": "recfound.merge.stage:run",
    "evaluate": "recfound.evaluate.stage:run",
}

ParamsOption = Annotated[Path, typer.Option("--params", help="params.yaml to read")]


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=1)


def _resolve(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help=f"one of: {', '.join(STAGES)}")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Run one pipeline stage (what dvc.yaml and the Prefect flow call)."""
    if name not in STAGES:
        _fail(ValueError(f"unknown stage {name!r}; expected one of {', '.join(STAGES)}"))
    try:
        cfg = load_config(params)
        _resolve(STAGES[name])(cfg)
    except RecFoundError as err:
        _fail(err)


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


def main() -> None:  # pragma: no cover - console entry for `python -m recfound.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
