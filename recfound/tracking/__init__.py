"""Tracking and lineage: MLflow stage runs, the registered pyfunc model, `recfound lineage`.

Reads git and DVC's files directly; knows nothing of Prefect.
"""
