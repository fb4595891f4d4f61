"""The field's protocol on a raw data folder, without the LLM: ID-based systems only.

    python -m bench.field --data DIR [--params params.yaml] [--sasrec-epochs N] [--out FILE]

DIR is laid out as `data/` (docs/bring-your-own-data.md, e.g. DIR/movielens/ml-latest-small/).
Reads it with the build's readers into the build's catalogue and sequences tables (the same
functions `recfound stage build` writes them with, recfound.data.catalogue), splits every
user leave-one-out (recfound.evaluate.leave_one_out), fits and scores
`evaluate.leave_one_out.systems` and prints HR@k / NDCG@k per source with bootstrap
intervals and the paired differences of each system minus popularity. Writes
bench/results/field.json (figures, settings, seconds per system).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench import machine, write_result
from recfound.config import load_config
from recfound.data.catalogue import CatalogueOutputs, read_sequences
from recfound.data.ingest import IngestReport
from recfound.data.readers import discover_sources
from recfound.data.tasks.catalog import load_catalog
from recfound.data.tasks.interactions import load_interactions
from recfound.evaluate import field_report, report
from recfound.evaluate.bootstrap import BootstrapSettings
from recfound.evaluate.id_baselines import id_models
from recfound.evaluate.leave_one_out import FieldRun, LeaveOneOut, rank_id_model

REFERENCE = "popularity"


def write_tables(data_dir: Path, params: Path, out: Path) -> int:
    """The catalogue and sequences tables of `data_dir`, as the build writes them; returns
    how many users' last two interactions share a second."""
    cfg = load_config(params).build
    sources = discover_sources(data_dir)
    ingest = IngestReport()
    catalog = load_catalog(sources, cfg, report=ingest)
    outputs = CatalogueOutputs(out)
    outputs.write_items(catalog)
    outputs.write_sequences(
        load_interactions(sources, catalog, report=ingest).sequences(), cfg.min_interactions
    )
    print(f"sequences: {outputs.sequences}")
    times = read_sequences(out)["timestamps"].to_pylist()
    ties = sum(len(t) >= 2 and t[-1] == t[-2] for t in times)
    print(f"users whose last two interactions share a second (tie rule applies): {ties}")
    return ties


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--sasrec-epochs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/field.json"))
    args = parser.parse_args()
    cfg = load_config(args.params)
    loo = cfg.evaluate.leave_one_out
    if args.sasrec_epochs is not None:
        loo = loo.model_copy(
            update={"sasrec": loo.sasrec.model_copy(update={"epochs": args.sasrec_epochs})}
        )
    with tempfile.TemporaryDirectory(prefix="recfound-field-") as tmp:
        started = time.perf_counter()
        ties = write_tables(args.data, args.params, Path(tmp))
        data = LeaveOneOut.read(tmp)
        read_s = time.perf_counter() - started
    run = FieldRun(data, loo, cfg.seed, cfg.build.max_history)
    seconds = {"read": round(read_s, 1)}
    for source in data.sources():
        models, skipped = id_models(loo, cfg.seed, len(data.items[source]))
        run.notes += skipped
        for model in models:
            started = time.perf_counter()
            run.keep(model.name, source, rank_id_model(model, data, source, run.k, cfg.seed))
            seconds[f"{model.name}[{source}]"] = round(time.perf_counter() - started, 1)
    settings = BootstrapSettings.from_config(cfg)
    field = field_report.finish(run, settings, REFERENCE)
    columns = [
        (f"{s} {key}", s, key)
        for s in data.sources()
        for k in loo.k
        for key in (f"HR@{k}", f"NDCG@{k}")
    ]
    print(report.keyed_table(field.results, columns))
    print(f"{REFERENCE} minus each system, paired:")
    print(report.keyed_comparison_table(field.comparisons, columns))
    print(f"seconds: {seconds}")
    write_result(
        {
            "data": str(args.data),
            "users": {s: len(data.of_source(s)) for s in data.sources()},
            "items": {s: len(data.items[s]) for s in data.sources()},
            "settings": loo.model_dump(),
            "metrics": field_report.metrics_section(field),
            "comparisons": field_report.comparisons_section(field),
            "last_two_tied": ties,
            "seconds": seconds,
            "machine": machine(),
        },
        args.out,
        show={"seconds": seconds},
    )


if __name__ == "__main__":
    main()
