"""`recfound <command> --help` reads well at 80 columns: every description line breaks only
where the width forces it, never mid-sentence where the source happened to wrap."""

from __future__ import annotations

import click
import pytest
import typer
from test_build import SAMPLE
from typer.testing import CliRunner

from recfound.cli import app, reflow
from recfound.data.readers.discover import SOURCE_DIRS, discover_sources
from recfound.data.sample import write_sample

WIDTH = 80
runner = CliRunner()


def command_paths(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command's argv path, the top-level group first."""
    paths = [path]
    for name, sub in getattr(command, "commands", {}).items():
        paths += command_paths(sub, (*path, name))
    return paths


COMMANDS = command_paths(typer.main.get_command(app))


def description(output: str) -> list[str]:
    """The help's prose: the lines after "Usage:" and before the first box, stripped."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "Usage:" in line) + 1
    end = next((i for i, line in enumerate(lines) if line.startswith("╭")), len(lines))
    return [line.strip() for line in lines[start:end]]


def test_every_command_is_checked():
    names = {" ".join(path) for path in COMMANDS}
    assert {"", "stage", "data sample", "generate", "embed", "recommend", "lineage"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "recfound")
def test_help_at_80_columns_breaks_lines_only_where_the_width_forces_it(path):
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)})
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= WIDTH
    prose = description(result.output)
    text_width = WIDTH - 2  # rich pads the description by one column each side
    for line, following in zip(prose, prose[1:], strict=False):
        if line and following:  # within a paragraph
            next_word = following.split()[0]
            assert len(line) + 1 + len(next_word) > text_width, (line, following)


def test_reflow_joins_a_paragraphs_lines_and_keeps_paragraphs_and_lists():
    text = """First line
    goes on.

    Second paragraph
    wrapped here.
    - an item
      that wraps
    - another"""
    assert reflow(text) == (
        "First line goes on.\n\nSecond paragraph wrapped here.\n- an item that wraps\n- another"
    )


NUMBER_WORDS = {5: "five", 6: "six"}


def test_data_sample_help_counts_the_formats_the_sample_writes(tmp_path):
    written = discover_sources(write_sample(tmp_path / "data", SAMPLE)).present
    result = runner.invoke(app, ["data", "sample", "--help"], env={"COLUMNS": str(WIDTH)})
    prose = " ".join(description(result.output))
    assert f"{NUMBER_WORDS[len(written)]} of the {NUMBER_WORDS[len(SOURCE_DIRS)]}" in prose
    (missing,) = set(SOURCE_DIRS) - set(written)
    assert missing == "amazon_reviews_2018" and "Amazon Reviews 2014/2018" in prose
