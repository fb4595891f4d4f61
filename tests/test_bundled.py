"""The bundled sample's caps apply to the bundled sample alone; a user's data is built whole.

`recfound data sample` marks what it writes with a manifest of every file's hash; the build
takes data/ for the bundled sample only when data/ is exactly that (recfound.data.bundled).
With params.yaml as shipped, anything else keeps every row the data yields.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from test_build import SAMPLE

from recfound.config import load_config
from recfound.data.build import caps_line, write_unified
from recfound.data.bundled import data_kind
from recfound.data.readers.discover import SAMPLE_MANIFEST
from recfound.data.sample import write_sample

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = load_config(ROOT / "params.yaml").build


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(tmp_path_factory.mktemp("bundled") / "data", SAMPLE)


def _train_rows(result) -> Counter:
    return Counter({code: n for (code, _, split), n in result.counts.items() if split == "train"})


def _all_rows(result) -> Counter:
    """Rows per task over every split (test sizes differ between the two sets of caps)."""
    rows: Counter = Counter()
    for (code, _, _), n in result.counts.items():
        rows[code] += n
    return rows


def test_the_written_sample_is_the_bundled_sample_and_gets_its_caps(sample_dir, tmp_path):
    kind = data_kind(sample_dir)
    assert kind.bundled_sample, kind.why
    result = write_unified(sample_dir, SHIPPED, tmp_path / "unified")
    caps = SHIPPED.sample_caps
    assert result.caps["train"] == caps.train_per_task
    assert max(_train_rows(result).values()) <= caps.train_per_task
    manifest = json.loads((tmp_path / "unified" / "build.json").read_text())
    assert manifest["data"]["bundled_sample"] is True
    assert "is the bundled sample" in caps_line(result, sample_dir)
    assert SAMPLE_MANIFEST not in " ".join(result.report.ignored)  # ours, not an ignored file


@pytest.mark.parametrize("change", ["extra file", "changed file", "removed file", "no manifest"])
def test_a_sample_that_is_not_exactly_as_written_is_a_users_data(sample_dir, tmp_path, change):
    data = shutil.copytree(sample_dir, tmp_path / "data")
    ratings = data / "movielens" / "ml-100k" / "u.data"
    if change == "extra file":
        shutil.copytree(data / "movielens" / "ml-100k", data / "movielens" / "mine")
        (data / "movielens" / "mine" / "u.data").write_text("1\t1\t5\t881250949\n")
    elif change == "changed file":
        ratings.write_text(ratings.read_text() + "1\t2\t5\t881250949\n")
    elif change == "removed file":
        next((data / "amazon_google").iterdir()).unlink()
    else:
        (data / SAMPLE_MANIFEST).unlink()
    kind = data_kind(data)
    assert not kind.bundled_sample
    assert kind.why  # says why, for the build's summary


def test_a_users_data_is_built_whole_with_params_yaml_as_shipped(sample_dir, tmp_path):
    """The sample's files without its manifest stand for a user's own data: with the shipped
    params every train row the build can yield is kept (the same as explicitly uncapped)."""
    data = shutil.copytree(sample_dir, tmp_path / "data")
    (data / SAMPLE_MANIFEST).unlink()
    assert SHIPPED.train_per_task is None and SHIPPED.validation_per_task is None
    mine = write_unified(data, SHIPPED, tmp_path / "mine")
    sample = write_unified(sample_dir, SHIPPED, tmp_path / "sample")
    assert mine.caps["train"] is None
    kept, capped = _all_rows(mine), _all_rows(sample)
    assert all(kept[code] >= capped[code] for code in kept)
    assert sum(kept.values()) > 3 * sum(capped.values())
    line = caps_line(mine, data)
    assert "is your data" in line and "every row it yields is kept" in line


def test_the_committed_variants_hold_for_a_dataset_built_from_the_bundled_sample(tmp_path):
    """The variants' fingerprint hashes the caps the build applied, so moving the sample's caps
    to build.sample_caps (and leaving your data uncapped) leaves reports/variants current."""
    from recfound.evaluate.variants import stale_variants

    cfg = load_config(ROOT / "params.yaml")
    (tmp_path / "build.json").write_text(json.dumps({"data": {"bundled_sample": True}}))
    from_sample = cfg.model_copy(
        update={"paths": cfg.paths.model_copy(update={"unified": tmp_path})}
    )
    assert stale_variants(from_sample, ROOT / "reports" / "variants") == []
    # built from a user's data, the same runs no longer describe what params.yaml would train
    assert stale_variants(
        cfg.model_copy(
            update={"paths": from_sample.paths.model_copy(update={"unified": tmp_path / "none"})}
        ),
        ROOT / "reports" / "variants",
    )
