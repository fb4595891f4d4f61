"""The names of the files and directories the pipeline's stages write, defined once.

The stage contract (recfound.stages) places each under a params.yaml `paths` entry as a dvc.yaml
out, metric, plot or MLflow artifact; the stage that writes it and every reader import the name
from here. A leaf module (it imports nothing), so depending on it ties no stage to another's code.
"""

# build, under paths.unified: the task set and the ingest report
BUILD_MANIFEST = "build.json"
# every user's full time-ordered sequence, uncapped: the field's leave-one-out split reads it
SEQUENCES_FILE = "sequences.parquet"

# train, under paths.train_metrics
STEPS_FILE = "steps.jsonl"  # one JSON object per optimizer step
SAMPLES_DIR = "samples"  # per-rank row ids each step trained on (lineage)
VAL_LOSS_FILE = "val_loss.json"  # validation loss per task, before and after training
LOSS_CSV = "loss_per_task.csv"  # long format: step,task,loss
RATIO_CSV = "ratio_per_task.csv"  # long format: step,task,ratio (S2Sched's mix)

# merge, under paths.merged: the merged TMoLE (or LoRA) adapter
MERGED_ADAPTER_DIR = "adapter"

# index, under paths.index: what was built, per embedding task (not the vectors)
INDEX_SUMMARY_FILE = "index.json"

# evaluate, under paths.reports
METRICS_FILE = "metrics.json"  # every metric, per source, with intervals
COMPARISONS_FILE = "comparisons.json"  # RecFound minus each system, paired intervals
RESULTS_FILE = "results.md"  # the tables, readable without dvc pull
CURVE_FILE = "learning_curve.csv"  # validation metric per checkpoint
HEADLINE_DIR = "headline"  # one primary metric per task and system: `dvc metrics show`
FIGURES_DIR = "figures"
PREDICTIONS_DIR = "predictions"
EVIDENCE_DIR = "evidence"  # per-row statistics behind every score and interval
VARIANTS_DIR = "variants"  # `recfound ablate` results, git-tracked: reports/variants/<name>/
