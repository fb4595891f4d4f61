"""Whether data/ is the bundled sample, whose small caps apply to it alone.

`recfound data sample` writes, beside the files it generates, a manifest
(`data/.recfound-sample.json`: every file's path and sha256). data/ is *the bundled sample*
when that manifest is there and data/ holds exactly the files it lists, byte for byte; the
build then uses `build.sample_caps`, so the default run stays short. Any other data/ — a
user's own sources, or the sample with a file added, changed or removed — is built with
`build.*_per_task` (null by default: every row the data yields), and the build says which
of the two it found and why.

The check costs nothing on a user's data (no manifest: no hashing) and hashes the sample's few
megabytes otherwise; a manifest beside other files fails on the file list before any hashing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from recfound.config import BuildConfig
from recfound.data.readers.copies import HASH, file_digest
from recfound.data.readers.discover import SAMPLE_MANIFEST
from recfound.data.unified import BUILD_MANIFEST


def _files(data_dir: Path) -> list[str]:
    """Every file under `data_dir` but the manifest, as sorted POSIX paths relative to it."""
    return sorted(
        path.relative_to(data_dir).as_posix()
        for path in data_dir.rglob("*")
        if path.is_file() and path.name != SAMPLE_MANIFEST
    )


def write_manifest(data_dir: str | Path, seed: int) -> Path:
    """List every file of the freshly written sample in `data_dir` (deterministic bytes: the
    sample's files are, so data.dvc still matches a regenerated sample)."""
    data_dir = Path(data_dir)
    manifest = {
        "written_by": "recfound data sample",
        "seed": seed,
        HASH: {name: file_digest(data_dir / name) for name in _files(data_dir)},
    }
    path = data_dir / SAMPLE_MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class DataKind:
    """What data/ is: the bundled sample or not, and the reason, for the build's summary."""

    bundled_sample: bool
    why: str


def data_kind(data_dir: str | Path) -> DataKind:
    """Whether `data_dir` is exactly the bundled sample its manifest describes."""
    data_dir = Path(data_dir)
    manifest_path = data_dir / SAMPLE_MANIFEST
    if not manifest_path.is_file():
        return DataKind(False, f"no {SAMPLE_MANIFEST}: not written by `recfound data sample`")
    try:
        listed: dict[str, str] = json.loads(manifest_path.read_text(encoding="utf-8"))[HASH]
    except (OSError, ValueError, KeyError, TypeError):
        return DataKind(False, f"{manifest_path} is unreadable: taken as your data")
    present = _files(data_dir)
    if extra := sorted(set(present) - set(listed)):
        return DataKind(False, f"{len(extra)} file(s) the sample did not write, e.g. {extra[0]}")
    if missing := sorted(set(listed) - set(present)):
        return DataKind(False, f"{len(missing)} sample file(s) missing, e.g. {missing[0]}")
    if changed := [name for name in present if file_digest(data_dir / name) != listed[name]]:
        return DataKind(False, f"{len(changed)} file(s) changed since written, e.g. {changed[0]}")
    return DataKind(True, f"every file matches {SAMPLE_MANIFEST}")


def caps_for(cfg: BuildConfig, kind: DataKind) -> BuildConfig:
    """`cfg` with the bundled sample's caps in place of build.*_per_task when `kind` is the
    sample; unchanged otherwise."""
    if not kind.bundled_sample:
        return cfg
    return cfg.model_copy(update=cfg.sample_caps.model_dump())


def built_from_sample(unified_dir: str | Path) -> bool:
    """Whether the dataset in `unified_dir` was built from the bundled sample (its build.json
    says so); False when there is none or it predates the record."""
    try:
        manifest = json.loads((Path(unified_dir) / BUILD_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool((manifest.get("data") or {}).get("bundled_sample"))
