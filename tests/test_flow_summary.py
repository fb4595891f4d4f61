"""The run summary of a pipeline flow: what ran, what was skipped, and why (flows.summary)."""

from __future__ import annotations

from flows.retrain import NOT_RETRAINED, RETRAINED, outcome_message
from flows.summary import UNCHANGED, StageOutcome, describe_changes, stage_outcome, summary


def test_an_up_to_date_stage_is_skipped_as_unchanged() -> None:
    assert stage_outcome("train", {}) == StageOutcome("train", False, UNCHANGED)


def test_a_stage_runs_because_of_what_dvc_status_names() -> None:
    status = {
        "train": [
            {
                "changed deps": {
                    "artifacts/unified": "modified",
                    "params.yaml": {"train": "modified"},
                }
            },
            "changed command",
        ]
    }
    outcome = stage_outcome("train", status)
    assert outcome.ran
    assert outcome.why == "params train; deps: artifacts/unified modified; changed command"


def test_a_stage_with_a_stale_upstream_stage_runs_and_says_so() -> None:
    outcome = stage_outcome(
        "evaluate", {"merge": [{"changed outs": {"artifacts/merged": "deleted"}}]}
    )
    assert outcome == StageOutcome("evaluate", True, "upstream stage changed: merge")


def test_changed_outputs_are_named() -> None:
    assert describe_changes([{"changed outs": {"artifacts/index": "deleted"}}]) == (
        "outs: artifacts/index deleted"
    )


def test_the_summary_is_a_headline_and_one_aligned_line_per_stage() -> None:
    outcomes = [
        StageOutcome("build", True, "deps: data modified"),
        StageOutcome("base_model", False, UNCHANGED),
        StageOutcome("validate", True, "upstream stage changed: build"),
    ]
    assert summary(outcomes).splitlines() == [
        "2 of 3 stages ran (build, validate); 1 skipped as unchanged",
        "  build       ran      deps: data modified",
        f"  base_model  skipped  {UNCHANGED}",
        "  validate    ran      upstream stage changed: build",
    ]


def test_nothing_to_do_is_said_plainly() -> None:
    outcomes = [StageOutcome(s, False, UNCHANGED) for s in ("build", "train")]
    assert summary(outcomes).splitlines()[0] == (
        "nothing to do: all 2 stages unchanged since their last run"
    )


def test_retrained_only_when_train_ran() -> None:
    validate_only = [StageOutcome("build", True, "x"), StageOutcome("validate", True, "x")]
    with_train = [*validate_only, StageOutcome("train", True, "x")]
    skipped_train = [*validate_only, StageOutcome("train", False, UNCHANGED)]
    assert outcome_message(with_train, True) == f"{RETRAINED}; data.dvc committed"
    assert outcome_message(validate_only, True).startswith(NOT_RETRAINED)
    assert outcome_message(skipped_train, False) == (
        f"{NOT_RETRAINED}; data.dvc not committed (tree not clean)"
    )


def test_a_first_run_names_a_few_changed_files_and_counts_the_rest() -> None:
    deps = {f"recfound/m{i}.py": "modified" for i in range(6)}
    assert describe_changes([{"changed deps": deps}]) == (
        "deps: recfound/m0.py modified, recfound/m1.py modified, recfound/m2.py modified and 3 more"
    )
