"""Small helpers for tests that build a throw-away git repository."""

from __future__ import annotations

import os
import subprocess
import sys
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


def pipeline_env(**extra: str) -> dict[str, str]:
    """The environment for a pipeline run in a throw-away repository: this one without its
    Prefect and MLflow settings (an earlier test's `mlflow.set_tracking_uri` leaves
    MLFLOW_TRACKING_URI behind, and a stage would track into that test's store), this
    environment's scripts (`recfound`, `dvc`) first on PATH, and `extra`."""
    scripts = Path(sys.executable).parent
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))},
        "PATH": f"{scripts}{os.pathsep}{os.environ['PATH']}",
        **extra,
    }


def write_yaml(path: Path, doc: object) -> None:
    """Write `doc` as YAML in key order, creating the parent directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


# Every `paths` entry of params.yaml somewhere other than its default (docs/operations.md,
# "Paths that move"): the scratch disk for training, the rest under another directory.
MOVED_PATHS = {
    "data": "raw/data",
    "base_model": "elsewhere/base_model",
    "unified": "elsewhere/unified",
    "validation": "elsewhere/reports/validation",
    "validation_raw": "elsewhere/reports/validation_raw",
    "checkpoints": "scratch/checkpoints",
    "adapter": "scratch/adapter",
    "train_metrics": "elsewhere/reports/train",
    "merged": "elsewhere/merged",
    "index": "elsewhere/index",
    "reports": "elsewhere/reports",
    "stage_lock": "state/stage.lock",
    "workspace_lock": "state/workspace.lock",
    "workspace_queue": "state/queue",
}


def move_paths(params: Path, moved: dict[str, str]) -> None:
    """Point the given `paths` entries of the params.yaml file `params` elsewhere."""
    doc = yaml.safe_load(params.read_text(encoding="utf-8"))
    unknown = set(moved) - set(doc["paths"])
    assert not unknown, f"params.yaml has no paths.{unknown}"
    doc["paths"].update(moved)
    write_yaml(params, doc)
