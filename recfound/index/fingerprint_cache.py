"""Directory fingerprints remembered by what their files look like: (path, size, mtime).

Checking an index against its model hashes every byte of the base model and merged adapter
directories (~270 MB for SmolLM2-135M: seconds at every `recommend`, every evaluate, every
served model's load). `dir_fingerprint` returns `recfound.data.unified.data_fingerprint` of a
directory, remembered under a key made of the directory's resolved path and each of its files'
relative path, size and modification time (ns): while none of them changes, the remembered
fingerprint is returned without reading a byte; a file added, removed, rewritten or touched
makes another key and a fresh hash. (DVC trusts the same triple for its own hash cache.)

Remembered in this process and in a JSON file in the user's cache directory
(`$RECFOUND_CACHE_DIR`, else `$XDG_CACHE_HOME/recfound`, else `~/.cache/recfound`), so that the
next process finds it too; a cache file that cannot be read or written only costs the hash.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from recfound.atomic import atomic_file

CACHE_DIR_ENV = "RECFOUND_CACHE_DIR"
CACHE_FILE = "fingerprints.json"
# Directories remembered at most (the newest kept): a few models and adapters, not a history.
MAX_ENTRIES = 64

_remembered: dict[str, str] = {}


def cache_file() -> Path:
    """Where fingerprints are remembered between processes (module doc)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]) / CACHE_FILE
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "recfound" / CACHE_FILE


def stat_key(directory: Path) -> str:
    """A hash of the directory's resolved path and every file's (relative path, size, mtime)."""
    from recfound.data.unified import raw_files  # (datasets: only when a model is checked)

    directory = directory.resolve()
    digest = hashlib.blake2b(str(directory).encode() + b"\0", digest_size=16)
    for path in raw_files(directory):
        stat = path.stat()
        name = path.relative_to(directory).as_posix()
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _read(path: Path) -> dict[str, str]:
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return kept if isinstance(kept, dict) else {}


def _write(path: Path, kept: dict[str, str]) -> None:
    newest = dict(list(kept.items())[-MAX_ENTRIES:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as handle:
            json.dump(newest, handle, indent=1)
    except OSError:
        pass  # a read-only or full cache directory: the next check hashes again


def dir_fingerprint(directory: str | Path) -> str:
    """`data_fingerprint(directory)`, hashed only when its files' (path, size, mtime) changed."""
    directory = Path(directory)
    key = stat_key(directory)
    if key in _remembered:
        return _remembered[key]
    path = cache_file()
    kept = _read(path)
    if isinstance(kept.get(key), str):
        _remembered[key] = kept[key]
        return kept[key]
    from recfound.data.unified import data_fingerprint

    fingerprint = data_fingerprint(directory)
    _remembered[key] = fingerprint
    kept.pop(key, None)
    _write(path, {**kept, key: fingerprint})
    return fingerprint
