"""Checkpoints of another configuration are set aside, not deleted, until the new step 0 is safe."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from test_train_loop import make_config

from recfound.errors import StorageError
from recfound.train import checkpoint as ckpt
from recfound.train.smoke import write_synthetic_unified
from recfound.train.stage import train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def fake_checkpoints(root: Path, fingerprint: str, steps: tuple[int, ...]) -> None:
    """Complete-looking checkpoints (what list_checkpoints counts) of one configuration."""
    for step in steps:
        path = ckpt.checkpoint_dir(root, step)
        path.mkdir(parents=True)
        (path / ckpt.STATE_FILE).write_text(json.dumps({"fingerprint": fingerprint}))


def steps_of(root: Path) -> list[int]:
    return [step for step, _ in ckpt.list_checkpoints(root)]


# ------------------------------------------------------------------ the rules, on fake ones


def test_another_configurations_checkpoints_are_renamed_aside_whole(tmp_path):
    root = tmp_path / "checkpoints"
    fake_checkpoints(root, "old", (0, 4, 8))
    note = ckpt.prepare_root(root, "new")
    assert not root.exists()
    assert steps_of(ckpt.previous_root(root)) == [0, 4, 8]
    assert str(ckpt.previous_root(root)) in note


def test_the_aside_copy_is_removed_only_by_drop_previous(tmp_path):
    root = tmp_path / "checkpoints"
    fake_checkpoints(root, "old", (0, 4))
    ckpt.prepare_root(root, "new")
    fake_checkpoints(root, "new", (0,))
    ckpt.drop_previous(root)
    assert not ckpt.previous_root(root).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]  # no discard left


def test_a_run_with_a_third_configuration_keeps_the_aside_copy_until_its_own_step_0(tmp_path):
    root = tmp_path / "checkpoints"
    fake_checkpoints(root, "first", (0, 4))
    ckpt.prepare_root(root, "second")  # ... and the second run died before its step 0
    assert ckpt.prepare_root(root, "third") is None
    assert steps_of(ckpt.previous_root(root)) == [0, 4]


def test_the_old_settings_again_get_their_checkpoints_back(tmp_path):
    root = tmp_path / "checkpoints"
    fake_checkpoints(root, "old", (0, 4))
    ckpt.prepare_root(root, "new")  # ... and the new run died before its step 0
    root.mkdir()  # as a killed save leaves it: empty but for a temp dir
    (root / ".step-000000.tmp-x").mkdir()
    assert "restored" in ckpt.prepare_root(root, "old")
    assert steps_of(root) == [0, 4]
    assert not ckpt.previous_root(root).exists()


def test_a_superseded_aside_copy_is_replaced_or_removed(tmp_path):
    root = tmp_path / "checkpoints"
    fake_checkpoints(ckpt.previous_root(root), "oldest", (0,))
    fake_checkpoints(root, "old", (0, 4))  # its step 0 was written: "oldest" is superseded
    ckpt.prepare_root(root, "new")
    assert ckpt.latest_fingerprint(ckpt.previous_root(root)) == "old"
    fake_checkpoints(root, "new", (0,))
    assert ckpt.prepare_root(root, "new") is None  # resuming: nothing else to keep
    assert not ckpt.previous_root(root).exists()


# --------------------------------------------------------------- the training loop, for real


@pytest.fixture(scope="module")
def unified_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unified") / "unified"
    return write_synthetic_unified(out, train_per_task=8, validation_per_task=2, test_per_task=1)


def disk_full_at_step_0(monkeypatch) -> None:
    """The optimizer file of every checkpoint save fails as on a full disk."""

    def no_space(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt, "save_file", no_space)


def test_a_failed_first_save_after_a_settings_change_keeps_the_old_checkpoints(
    tmp_path, tiny_model_dir, unified_dir, monkeypatch
):
    old = make_config(tmp_path, tiny_model_dir, unified_dir, steps=4, save_every=2)
    train(old)
    root = old.paths.checkpoints
    changed = make_config(tmp_path, tiny_model_dir, unified_dir, steps=2, save_every=2, lr=5e-4)
    with monkeypatch.context() as patch:
        disk_full_at_step_0(patch)
        for _ in range(3):  # a retried stage must not lose more with every attempt
            with pytest.raises(StorageError) as caught:
                train(changed)
            assert caught.value.filename.startswith(str(ckpt.checkpoint_dir(root, 0)))
    assert steps_of(ckpt.previous_root(root)) == [0, 2, 4]
    assert steps_of(root) == []
    outcome = train(changed)
    assert outcome.resumed_from is None
    assert steps_of(root) == [0, 2]
    assert not ckpt.previous_root(root).exists()


def test_a_run_killed_before_its_first_save_leaves_the_old_settings_resumable(
    tmp_path, tiny_model_dir, unified_dir, monkeypatch
):
    old = make_config(tmp_path, tiny_model_dir, unified_dir, steps=4, save_every=2)
    train(old)
    changed = make_config(tmp_path, tiny_model_dir, unified_dir, steps=2, save_every=2, lr=5e-4)
    with monkeypatch.context() as patch:
        disk_full_at_step_0(patch)
        with pytest.raises(StorageError):
            train(changed)
    outcome = train(old)
    assert outcome.resumed_from == 4
    assert steps_of(old.paths.checkpoints) == [0, 2, 4]
