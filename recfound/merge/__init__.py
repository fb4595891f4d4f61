"""Model Merge (recfound.md §4): checkpoints of one run -> one adapter (methods, select, stage)."""
