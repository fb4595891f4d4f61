"""RecFound: one LLM for generative and embedding recommendation tasks (TMoLE, S2Sched, Model Merge)."""

__version__ = "0.1.0"
