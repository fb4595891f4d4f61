"""Prefect flows and deployments: thin wrappers that run the DVC stages, nothing else.

- flows.pipeline: flow `recfound` (deployment `recfound/train`), one task per stage.
- flows.retrain: flow `recfound-retrain` (deployment `recfound-retrain/data-change`),
  on an interval: retrain when data/ no longer matches data.dvc.
- flows.deployments: serves both (`python -m flows.deployments`, or `recfound serve`).
"""
