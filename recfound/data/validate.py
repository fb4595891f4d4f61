"""Stage `validate`: run the Great Expectations suites on the raw files and the unified dataset.

Each frame (recfound.data.gx_frames, built one at a time) is validated by a GX
ValidationDefinition: its suite from expectations/ and a pandas dataframe batch, in an
ephemeral GX context whose only files are the Data Docs site, rendered once at the end.
Knob-valued bounds are GX suite parameters filled from params.yaml `validate`.

Outputs, written atomically into `paths.validation` on success AND on failure (so a user can
read why): report.json (per validation: success, per expectation: column, unexpected count,
examples) and data_docs/index.html (self-contained, it renders offline: see
recfound.data.docs_assets). A failed expectation then raises ValidationFailed naming suite,
batch, expectation type, column and the count of bad rows; the CLI prints it and exits 1, so
DVC stops before `train` (DVC keeps a failed stage's files in the workspace).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import great_expectations as gx
from great_expectations.core.expectation_validation_result import (
    ExpectationSuiteValidationResult,
    ExpectationValidationResult,
)
from great_expectations.data_context import AbstractDataContext
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from rich.console import Console
from rich.table import Table

from recfound import progress
from recfound.atomic import atomic_dir, atomic_file
from recfound.config import Config, ValidateConfig
from recfound.data.docs_assets import make_data_docs_offline
from recfound.data.gx_frames import Batch, raw_batches, unified_batches
from recfound.data.gx_suites import load_suites
from recfound.data.readers.common import line_limit, quoted
from recfound.data.unified import BUILD_MANIFEST, data_fingerprint, read_manifest
from recfound.errors import DataError, ValidationFailed

REPORT_NAME = "report.json"
DATA_DOCS_DIR = "data_docs"
DOCS_SITE = "recfound"
DATASOURCE = "recfound"
ASSET_PATH_SEPARATOR = "__"
# The ValidateConfig fields the suites reference as {"$PARAMETER": name}.
SUITE_PARAMETERS = ("min_text_chars", "max_text_chars", "raw_max_text_chars")
# Keys of an expectation's kwargs that name the column(s) it is about (a table-level one, such
# as the column-set check, names none).
COLUMN_KWARGS = ("column", "column_A", "column_B", "column_list")
# A bad value quoted in report.json is cut to this many characters.
REPORT_VALUE_CHARS = 300


def _quote_all(values: list[Any]) -> str:
    """Values as a short list for a one-line message (long texts cut; the report has them)."""
    return "[" + ", ".join(quoted(v) for v in values) + "]"


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result, as the report and the error message show it.

    element_count / unexpected_count: rows checked / rows that broke a per-row expectation.
    Set expectations (columns, distinct values) instead list what is missing or unexpected.
    """

    type: str
    column: str | None
    success: bool
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_examples: list[Any] = field(default_factory=list)
    missing: list[Any] = field(default_factory=list)
    observed_value: Any = None
    expected: Any = None
    error: str | None = None

    def describe(self) -> str:
        """`type(column): what went wrong`, in words, for the error message."""
        where = f"{self.type}({self.column})" if self.column else self.type
        if self.error:
            return f"{where}: could not be evaluated: {self.error}"
        parts = []
        if self.unexpected_count is not None and self.element_count is not None:
            examples = (
                f", e.g. {_quote_all(self.unexpected_examples)}" if self.unexpected_examples else ""
            )
            parts.append(
                f"{self.unexpected_count} bad rows of {self.element_count} checked{examples}"
            )
        if self.missing:
            parts.append(f"missing {_quote_all(self.missing)}")
        if self.element_count is None and self.unexpected_examples:
            parts.append(f"unexpected {_quote_all(self.unexpected_examples)}")
        if not parts:
            parts.append(f"observed {self.observed_value}, expected {self.expected}")
        return f"{where}: " + "; ".join(parts)


@dataclass(frozen=True)
class ValidationOutcome:
    """One suite run on one batch."""

    suite: str
    batch: str
    rows_read: int
    rows_validated: int
    expectations: list[ExpectationOutcome]

    @property
    def success(self) -> bool:
        return all(e.success for e in self.expectations)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if not e.success]


def _cut_texts(values: list[Any]) -> list[Any]:
    """Long strings cut to REPORT_VALUE_CHARS (one huge review must not bloat the report)."""
    return [
        v[:REPORT_VALUE_CHARS] + f"… ({len(v):,} chars)"
        if isinstance(v, str) and len(v) > REPORT_VALUE_CHARS
        else v
        for v in values
    ]


def _cut_quoted_values(suite_result: ExpectationSuiteValidationResult) -> None:
    """Cut, in place, the long strings GX quotes in a result (unexpected values and counts)."""
    for result in suite_result.results:
        details = result.result or {}
        for key in ("partial_unexpected_list", "partial_missing_list"):
            if isinstance(details.get(key), list):
                details[key] = _cut_texts(details[key])
        for entry in details.get("partial_unexpected_counts") or []:
            if isinstance(entry, dict) and "value" in entry:
                entry["value"] = _cut_texts([entry["value"]])[0]


def _json_safe(value: Any) -> Any:
    """numpy scalars, tuples and sets as plain JSON values (GX results hold all of these)."""
    return json.loads(json.dumps(value, default=_to_builtin))


def _to_builtin(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    if hasattr(value, "tolist"):  # numpy array
        return value.tolist()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _column_of(kwargs: dict[str, Any]) -> str | None:
    names = []
    for key in COLUMN_KWARGS:
        value = kwargs.get(key)
        if isinstance(value, str):
            names.append(value)
        elif isinstance(value, list | tuple):
            names.extend(str(v) for v in value)
    return ", ".join(names) or None


def _expected_of(kwargs: dict[str, Any]) -> Any:
    """The allowed set or bounds an expectation compares with (suite parameters filled in)."""
    for key in ("value_set", "column_set", "value_pairs_set"):
        if kwargs.get(key) is not None:
            return kwargs[key]
    bounds = {key: kwargs[key] for key in ("min_value", "max_value") if kwargs.get(key) is not None}
    return bounds or None


def expectation_outcome(result: ExpectationValidationResult, examples: int) -> ExpectationOutcome:
    """The facts of one GX expectation result that a reader of the report needs."""
    config = result.expectation_config
    kwargs = dict(config.kwargs)
    details = result.result or {}
    error = None
    if result.exception_info and result.exception_info.get("raised_exception"):
        error = result.exception_info.get("exception_message")
    # Set expectations: GX reports a column-set mismatch under details, distinct values as
    # partial lists.
    mismatched = (details.get("details") or {}).get("mismatched") or {}
    unexpected = details.get("partial_unexpected_list") or mismatched.get("unexpected") or []
    missing = details.get("partial_missing_list") or mismatched.get("missing") or []
    return ExpectationOutcome(
        type=config.type,
        column=_column_of(kwargs),
        success=bool(result.success),
        element_count=details.get("element_count"),
        unexpected_count=details.get("unexpected_count"),
        unexpected_examples=_json_safe(list(unexpected))[:examples],  # cut in SuiteRunner.run
        missing=_json_safe(list(missing))[:examples],
        observed_value=_json_safe(details.get("observed_value")),
        expected=_json_safe(_expected_of(kwargs)),
        error=error,
    )


def gx_context(docs_dir: Path) -> AbstractDataContext:
    """An in-memory GX context whose one Data Docs site is `docs_dir` (nothing else on disk)."""
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={
            DOCS_SITE: {
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),
                },
            }
        },
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def asset_name(batch_name: str) -> str:
    """The GX data asset for a batch: its name with path separators replaced, because GX uses
    the asset name as a file name in the Data Docs and refuses '/' and '\\' there."""
    return batch_name.replace("/", ASSET_PATH_SEPARATOR).replace("\\", ASSET_PATH_SEPARATOR)


class SuiteRunner:
    """Validates each batch against its suite (a GX ValidationDefinition per batch)."""

    def __init__(
        self,
        context: AbstractDataContext,
        suites: dict[str, gx.ExpectationSuite],
        settings: ValidateConfig,
    ) -> None:
        self.context = context
        self.datasource = context.data_sources.add_pandas(DATASOURCE)
        self.suites = {name: context.suites.add(suite) for name, suite in suites.items()}
        self.parameters = {name: getattr(settings, name) for name in SUITE_PARAMETERS}
        self.examples = settings.report_examples

    def run(self, batch: Batch, suites_dir: Path) -> ValidationOutcome:
        """Validate one batch; its suite must exist in `suites_dir`."""
        if batch.suite not in self.suites:
            raise DataError(suites_dir / f"{batch.suite}.json", "expectation suite not found")
        asset = self.datasource.add_dataframe_asset(asset_name(batch.name))
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(
                name=f"{batch.suite} @ {batch.name}",
                data=asset.add_batch_definition_whole_dataframe("whole frame"),
                suite=self.suites[batch.suite],
            )
        )
        store = self.context.validation_results_store
        stored_before = set(store.list_keys())
        suite_result = definition.run(
            batch_parameters={"dataframe": batch.frame},
            expectation_parameters=self.parameters,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": self.examples},
        )
        # The Data Docs render the stored result: store it again with long values cut, so one
        # 5 MB review does not make a 5 MB page.
        _cut_quoted_values(suite_result)
        for key in set(store.list_keys()) - stored_before:
            store.set(key, suite_result)
        return self._outcome(batch, suite_result)

    def build_data_docs(self) -> None:
        """Render the Data Docs site (index, one page per suite and per validation) once.

        Once at the end rather than an UpdateDataDocsAction per validation: the action
        re-renders the whole index every time, which measured half the stage's time.
        """
        self.context.build_data_docs(site_names=[DOCS_SITE])

    def _outcome(
        self, batch: Batch, suite_result: ExpectationSuiteValidationResult
    ) -> ValidationOutcome:
        return ValidationOutcome(
            suite=batch.suite,
            batch=batch.name,
            rows_read=batch.rows_read,
            rows_validated=len(batch.frame),
            expectations=[expectation_outcome(r, self.examples) for r in suite_result.results],
        )


def batches(cfg: Config, raw_only: bool = False) -> Iterator[Batch]:
    """Every frame to validate: the raw files present, then (unless `raw_only`) the unified
    splits."""
    settings = cfg.validate_
    if cfg.paths.data.is_dir():
        yield from raw_batches(cfg.paths.data, settings.raw_sample_rows, settings.seed)
    if not raw_only:
        yield from unified_batches(cfg.paths.unified)


def check_built_from_current_data(cfg: Config) -> None:
    """Refuse a unified dataset built from other raw data than data/ holds now.

    The build records the fingerprint of the raw files it read in build.json; after a failed
    or skipped build the old dataset would otherwise be validated and passed.
    """
    unified = Path(cfg.paths.unified)
    if not unified.exists():
        raise DataError(unified, "unified dataset not found; run `recfound stage build` first")
    built_from = read_manifest(unified).get("data_fingerprint")
    if built_from is None:
        raise ValidationFailed(
            f"{unified}: has no {BUILD_MANIFEST} recording which raw data it was built from; "
            "rebuild it (`recfound stage build` or `dvc repro build`)"
        )
    now = data_fingerprint(cfg.paths.data)
    if built_from != now:
        raise ValidationFailed(
            f"{unified} was built from other raw data than {cfg.paths.data} holds now "
            f"(built from {built_from}, {cfg.paths.data} is now {now}); rebuild it "
            "(`recfound stage build` or `dvc repro build`) before validating"
        )


def write_report(path: Path, outcomes: list[ValidationOutcome], settings: ValidateConfig) -> None:
    """report.json: overall success, the suite parameters used, every validation's outcome."""
    report = {
        "success": all(o.success for o in outcomes),
        "suite_parameters": {name: getattr(settings, name) for name in SUITE_PARAMETERS},
        "data_docs": f"{DATA_DOCS_DIR}/index.html",
        "validations": [
            {
                "suite": o.suite,
                "batch": o.batch,
                "success": o.success,
                "rows_read": o.rows_read,
                "rows_validated": o.rows_validated,
                "expectations": [e.__dict__ for e in o.expectations],
            }
            for o in outcomes
        ],
    }
    with atomic_file(path) as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")


def summary_table(outcomes: Iterable[ValidationOutcome]) -> Table:
    """One line per validation: suite, batch, rows, expectations passed, status."""
    table = Table(title="Great Expectations validation")
    table.add_column("suite", no_wrap=True)
    table.add_column("batch", overflow="fold")
    table.add_column("rows validated / read", justify="right")
    table.add_column("passed", justify="right")
    table.add_column("status")
    for o in outcomes:
        passed = len(o.expectations) - len(o.failures)
        table.add_row(
            o.suite,
            o.batch,
            f"{o.rows_validated} / {o.rows_read}",
            f"{passed} / {len(o.expectations)}",
            "[green]ok[/green]" if o.success else "[red]FAILED[/red]",
        )
    return table


def failure_message(outcomes: Iterable[ValidationOutcome], report: Path, docs: Path) -> str:
    """Every failed expectation on its own line: suite, batch, expectation, column, count."""
    lines = [f"suite {o.suite} on {o.batch}: {e.describe()}" for o in outcomes for e in o.failures]
    return (
        f"data validation failed ({len(lines)} expectation(s)):\n  "
        + "\n  ".join(lines)
        + f"\nreport: {report}\nData Docs: {docs}"
    )


def validate(
    cfg: Config, console: Console | None = None, raw_only: bool = False
) -> list[ValidationOutcome]:
    """Validate raw + unified data; write report.json and Data Docs; return the outcomes.

    `raw_only`: the raw-file suites alone, into `paths.validation_raw` (no built dataset
    needed). Outputs are written whether or not every suite passes; nothing raises for failed
    expectations here (see `run`).
    """
    console = console or progress.console()
    settings = cfg.validate_
    suites = load_suites(settings.suites)
    # GX logs each metric it computes at INFO; the summary table says what matters.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    outcomes: list[ValidationOutcome] = []
    if not raw_only:
        check_built_from_current_data(cfg)
    with atomic_dir(output_dir(cfg, raw_only)) as out:
        runner = SuiteRunner(gx_context(out / DATA_DOCS_DIR), suites, settings)
        # The raw readers take the build's line bound, so both stages accept the same files.
        with console.status("validating") as status, line_limit(cfg.build.max_line_bytes):
            for batch in batches(cfg, raw_only):
                note = f"validating {batch.name} ({batch.suite})"
                # a spinner on a terminal; in a log (where it shows nothing) a line per batch
                status.update(note) if console.is_terminal else console.print(note)
                outcomes.append(runner.run(batch, settings.suites))
        with console.status("building Data Docs"):
            runner.build_data_docs()
            # GX's pages load their CSS/JS from CDNs; point them at vendored copies instead.
            make_data_docs_offline(out / DATA_DOCS_DIR)
        write_report(out / REPORT_NAME, outcomes, settings)
    return outcomes


def output_dir(cfg: Config, raw_only: bool = False) -> Path:
    """Where a validation writes: the stage's output, or its own folder for `--raw-only`."""
    return Path(cfg.paths.validation_raw if raw_only else cfg.paths.validation)


def run(cfg: Config, raw_only: bool = False) -> None:
    """Stage `validate`: raise ValidationFailed (after writing the report) if any suite fails."""
    console = progress.console()
    outcomes = validate(cfg, console, raw_only)
    report = output_dir(cfg, raw_only) / REPORT_NAME
    docs = output_dir(cfg, raw_only) / DATA_DOCS_DIR / "index.html"
    console.print(summary_table(outcomes))
    console.print(f"report: {report}\nData Docs: {docs}", soft_wrap=True)
    if not all(o.success for o in outcomes):
        raise ValidationFailed(failure_message(outcomes, report, docs))
