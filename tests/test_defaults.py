"""One set of defaults: recfound/config.py's defaults are params.yaml's values, key for key.

`Config()` is what inference and the CLI use when no params file is given; the pipeline reads
params.yaml. Were they to differ (as they once did on a dozen keys: prompts fit to 192 tokens at
inference against 384 in training, another merge, half the answer length), the model would be
asked differently from how it was trained and evaluated. config.py keeps the types and bounds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recfound.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]


def differing_keys(left: Any, right: Any, prefix: str = "") -> list[str]:
    """Every dotted key whose value differs between two nested dumps, with both values."""
    if isinstance(left, dict) and isinstance(right, dict):
        return [
            line
            for key in sorted(set(left) | set(right), key=str)
            for line in differing_keys(
                left.get(key), right.get(key), f"{prefix}.{key}" if prefix else str(key)
            )
        ]
    return [] if left == right else [f"{prefix}: config.py {left!r}, params.yaml {right!r}"]


def test_config_defaults_are_the_shipped_params_yaml():
    defaults = Config().model_dump(mode="json", by_alias=True)
    shipped = load_config(ROOT / "params.yaml").model_dump(mode="json", by_alias=True)
    drift = differing_keys(defaults, shipped)
    assert not drift, "recfound/config.py and params.yaml disagree:\n" + "\n".join(drift)


def test_a_drifted_default_is_named_with_both_values():
    shipped = load_config(ROOT / "params.yaml").model_dump(mode="json", by_alias=True)
    drifted = Config.model_validate(shipped | {"train": shipped["train"] | {"steps": 7}})
    assert differing_keys(drifted.model_dump(mode="json", by_alias=True), shipped) == [
        f"train.steps: config.py 7, params.yaml {shipped['train']['steps']}"
    ]
