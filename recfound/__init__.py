"""RecFound: one LLM for generative and embedding recommendation tasks.

Trained with TMoLE (task-wise mixture of low-rank experts), S2Sched and a Model Merge step.
"""

__version__ = "0.1.0"
