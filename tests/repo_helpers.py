"""Small helpers for tests that build a throw-away git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with a fixed test identity; fail the test on a non-zero exit."""
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def write_yaml(path: Path, doc: object) -> None:
    """Write `doc` as YAML in key order, creating the parent directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
