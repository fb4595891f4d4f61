"""dvc.yaml, written from the stage contract (recfound.stages): `recfound contract --write`.

Nothing in dvc.yaml is edited by hand. Each stage's entries come from its contract in order:
cmd, deps (data deps, then the code: the contract's whole directories, then every module of the
entry's import closure that none covers, sorted), params, metrics, outs and plots; the contract's
notes become YAML comments. `check` compares the committed file with the generated one and names
each difference, stage and entry first (what DVC would run differently), then text.
"""

from __future__ import annotations

import difflib
import json
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from recfound.atomic import atomic_file
from recfound.errors import RecFoundError
from recfound.imports import import_closure, module_path
from recfound.stages import CONTRACTS, DVC_YAML, PROJECT_ROOT, StageContract

HEADER = """\
# GENERATED from the stage contract (recfound/stages.py) by `recfound contract --write`: edit the
# contract, not this file; `recfound contract --check` fails while the two differ.
# Each cmd is `recfound stage <name>`: the same entry point the Prefect flow runs. Code deps are
# the directories the contract names whole, plus every recfound module the stage's entry function
# imports (its import closure, recfound/imports.py) that none of them covers.
# Every data path is `${paths.<key>}` (or `${validate.suites}`): DVC reads params.yaml's top-level
# keys as template variables, so moving a `paths` entry in params.yaml moves the dep/out here too.
# Templating does not make `paths` a stage param: what each stage declares under `params` is all.
"""
_SECTIONS = ("deps", "params", "metrics", "outs", "plots")
WIDTH = 100  # columns of a comment line


def _covers(dep: str, path: str) -> bool:
    """A dep covers a file when it is that file or a directory above it."""
    return dep == path or Path(dep) in Path(path).parents


def code_deps(c: StageContract, root: Path = PROJECT_ROOT) -> list[tuple[str, str]]:
    """(path, note) of every code dep of `c`: its `code`, then each module of its entry's import
    closure under `root` that no `code` entry covers (sorted). A note in `c.code_notes` for a
    path that is no longer a dep is an error: the note would explain nothing."""
    declared = [(code.path, code.note) for code in c.code]
    closure = import_closure(root, c.entry.partition(":")[0])
    files = sorted(
        path
        for path in (module_path(root, m) for m in closure)
        if not any(_covers(d, path) for d, _ in declared)
    )
    notes = dict(c.code_notes)
    stale = sorted(set(notes) - set(files))
    if stale:
        raise RecFoundError(
            f"stage {c.name}: the contract notes why {', '.join(stale)} is a dep, but the stage "
            "no longer imports it (or a directory of `code` covers it): drop the note"
        )
    return declared + [(path, notes.get(path, "")) for path in files]


def _entries(c: StageContract, root: Path) -> dict[str, list[tuple[Any, str]]]:
    """Each dvc.yaml list of `c` as (entry, note) pairs; an entry is a path or {path: options}."""

    def with_options(items: Iterable[Any]) -> list[tuple[Any, str]]:
        return [({o.dvc_path: o.options()} if o.options() else o.dvc_path, o.note) for o in items]

    return {
        "deps": [(d.dvc_path, d.note) for d in c.deps] + code_deps(c, root),
        "params": [(p.key, p.note) for p in c.params],
        "metrics": with_options(c.metrics),
        "outs": with_options(c.outs),
        "plots": with_options(c.plots),
    }


def pipeline(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The dvc.yaml document the contract defines (as yaml.safe_load reads the file)."""
    stages: dict[str, Any] = {}
    for c in CONTRACTS:
        body: dict[str, Any] = {"cmd": c.cmd}
        for section, entries in _entries(c, root).items():
            if entries:
                body[section] = [entry for entry, _ in entries]
        stages[c.name] = body
    return {"stages": stages}


def _scalar(value: Any) -> str:
    """A YAML scalar: plain where YAML reads it back as the same string, else double-quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    try:
        plain = yaml.safe_load(f"k: {text}") == {"k": value}
    except yaml.YAMLError:
        plain = False
    return text if plain and " #" not in text else json.dumps(text)


def _comment(note: str) -> str:
    return f"  # {note}" if note else ""


def render(root: Path = PROJECT_ROOT) -> str:
    """dvc.yaml's text: `pipeline(root)`, laid out as a person would, notes as comments."""
    lines = [HEADER.rstrip("\n"), "stages:"]
    for c in CONTRACTS:
        lines.append(f"  {c.name}:")
        lines.append(f"    cmd: {_scalar(c.cmd)}")
        notes = dict(c.section_notes)
        for section in _SECTIONS:
            entries = _entries(c, root)[section]
            if not entries:
                continue
            lines.append(f"    {section}:")
            if section in notes:
                lines += textwrap.wrap(
                    notes[section], WIDTH, initial_indent="      # ", subsequent_indent="      # "
                )
            for entry, note in entries:
                if not isinstance(entry, dict):
                    lines.append(f"      - {_scalar(entry)}{_comment(note)}")
                    continue
                ((path, options),) = entry.items()
                lines.append(f"      - {_scalar(path)}:{_comment(note)}")
                lines.extend(f"          {k}: {_scalar(v)}" for k, v in options.items())
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _stage_differences(committed: dict[str, Any], generated: dict[str, Any]) -> list[str]:
    """What DVC would see differently, one line per stage and entry list."""
    ours, theirs = generated.get("stages") or {}, committed.get("stages") or {}
    lines = [f"stage {n}: in the contract, not in {DVC_YAML}" for n in ours if n not in theirs]
    lines += [f"stage {n}: in {DVC_YAML}, not in the contract" for n in theirs if n not in ours]
    if not lines and list(ours) != list(theirs):
        lines.append(f"stage order: contract {list(ours)}, {DVC_YAML} {list(theirs)}")
    for name in (n for n in ours if n in theirs):
        for key in sorted(set(ours[name]) | set(theirs[name])):
            want, have = ours[name].get(key), theirs[name].get(key)
            if want == have:
                continue
            if isinstance(want, list) and isinstance(have, list):
                keyed = [json.dumps(e, sort_keys=True) for e in want]
                held = [json.dumps(e, sort_keys=True) for e in have]
                missing = [e for e in keyed if e not in held]
                extra = [e for e in held if e not in keyed]
                what = ([f"missing {', '.join(missing)}"] if missing else []) + (
                    [f"not in the contract {', '.join(extra)}"] if extra else []
                )
                lines.append(f"stage {name} {key}: {'; '.join(what) or 'another order'}")
            else:
                lines.append(f"stage {name} {key}: contract {want!r}, {DVC_YAML} {have!r}")
    return lines


def check(root: Path = PROJECT_ROOT) -> list[str]:
    """How `root`/dvc.yaml differs from the generated one ([] when it is the same text)."""
    path = root / DVC_YAML
    generated = render(root)
    committed = path.read_text(encoding="utf-8") if path.is_file() else ""
    if committed == generated:
        return []
    try:
        parsed = yaml.safe_load(committed) or {}
    except yaml.YAMLError as err:
        return [f"{path}: not valid YAML ({err})"]
    lines = _stage_differences(parsed, pipeline(root))
    if not lines:  # the same pipeline for DVC: comments or layout differ
        diff = difflib.unified_diff(
            committed.splitlines(), generated.splitlines(), str(path), "generated", n=0, lineterm=""
        )
        lines = ["the same stages, other text:", *list(diff)[2:12]]
    return lines


def write(root: Path = PROJECT_ROOT) -> Path:
    """Write the generated dvc.yaml into `root`; its path."""
    path = root / DVC_YAML
    with atomic_file(path) as handle:  # DVC never reads half a pipeline
        handle.write(render(root))
    return path
