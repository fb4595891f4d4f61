"""The paper's figures as PNG files.

- Figure 2, `routing_similarity.png`: cosine similarity between the tasks' routing
  distributions. Task t's routing vector is its expert weights g(t) of every adapted layer,
  concatenated (layers in name order); entry (s, t) = cos(r_s, r_t).
- Figure 3, `sample_ratios.png`: S2Sched's per-task sample ratio (share of its group's slots)
  over training steps, one panel per task group, from training's ratio_per_task.csv.

Both show the task set of the run only (the tasks with training rows): a dataset without
embedding tasks gets a Figure 3 with the generative panel alone, and vice versa.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from recfound.atomic import atomic_file
from recfound.errors import DataError
from recfound.tasks import BY_CODE, TASKS, Kind, Task

ROUTING_FIGURE = "routing_similarity.png"
RATIO_FIGURE = "sample_ratios.png"
# Figure 3 size in inches: one panel of this width per task kind shown.
FIGURE_PANEL_WIDTH = 5.5
FIGURE_HEIGHT = 4.0


def routing_vectors(per_task_weights: Mapping[str, Mapping[str, np.ndarray]]) -> np.ndarray:
    """(tasks × layers·experts): each task's per-layer expert weights, layers in name order."""
    rows = []
    layers: list[str] | None = None
    for code, per_layer in per_task_weights.items():
        if layers is None:
            layers = sorted(per_layer)
        elif sorted(per_layer) != layers:
            raise ValueError(f"task {code}: routed layers differ from the first task's")
        rows.append(np.concatenate([np.asarray(per_layer[name], dtype=float) for name in layers]))
    return np.stack(rows)


def cosine_similarity_matrix(vectors: np.ndarray) -> np.ndarray:
    """S[i, j] = v_i·v_j / (‖v_i‖ ‖v_j‖)."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit @ unit.T


def adapter_routing_similarity(
    adapter, tasks: Sequence[Task] = TASKS
) -> tuple[list[str], np.ndarray]:
    """Codes of `tasks` (default all) and the routing-similarity matrix of a loaded adapter
    over them."""
    from recfound.model.adapters import routing_weights

    weights = {
        task.code: {
            name: gate.float().cpu().numpy()
            for name, gate in routing_weights(adapter, task.id).items()
        }
        for task in tasks
    }
    return list(weights), cosine_similarity_matrix(routing_vectors(weights))


def _save(figure: Figure, path: Path) -> Path:
    with atomic_file(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=150, bbox_inches="tight")
    return path


def plot_routing_similarity(codes: Sequence[str], similarity: np.ndarray, path: Path) -> Path:
    """Heatmap of the task × task routing similarity (Figure 2), values annotated."""
    figure = Figure(figsize=(7.5, 6.5))
    ax = figure.subplots()
    image = ax.imshow(similarity, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(codes)), labels=codes, rotation=90)
    ax.set_yticks(range(len(codes)), labels=codes)
    for i in range(len(codes)):
        for j in range(len(codes)):
            value = similarity[i, j]
            ax.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=6,
                color="black" if value > 0.6 else "white",
            )
    ax.set_title("Routing similarity between tasks (cosine of TMoLE expert weights)")
    figure.colorbar(image, ax=ax, fraction=0.046)
    return _save(figure, path)


def read_ratio_csv(path: Path) -> dict[str, tuple[list[int], list[float]]]:
    """ratio_per_task.csv (step,task,ratio) -> task code -> (steps, ratios), steps ascending."""
    series: dict[str, list[tuple[int, float]]] = {}
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"step", "task", "ratio"} <= set(reader.fieldnames):
                raise DataError(path, "expected the columns step,task,ratio")
            for line, record in enumerate(reader, start=2):
                if record["task"] not in BY_CODE:
                    raise DataError(path, f"unknown task {record['task']!r}", line=line)
                try:
                    point = (int(record["step"]), float(record["ratio"]))
                except ValueError as err:
                    raise DataError(path, f"bad number: {err}", line=line) from None
                series.setdefault(record["task"], []).append(point)
    except FileNotFoundError:
        raise DataError(path, "missing: the train stage writes it") from None
    return {
        code: ([s for s, _ in sorted(points)], [r for _, r in sorted(points)])
        for code, points in series.items()
    }


def plot_sample_ratios(series: Mapping[str, tuple[list[int], list[float]]], path: Path) -> Path:
    """Per-task sample ratio over training steps (Figure 3): one panel per task kind in
    `series` (embedding, generative), so a one-kind task set gets one panel."""
    panels = [
        (kind, [t for t in TASKS if t.kind is kind and t.code in series])
        for kind in (Kind.EMBEDDING, Kind.GENERATIVE)
    ]
    panels = [(kind, tasks) for kind, tasks in panels if tasks]
    if not panels:
        raise ValueError("no sample ratio of a known task to plot")
    figure = Figure(figsize=(FIGURE_PANEL_WIDTH * len(panels), FIGURE_HEIGHT))
    axes = np.atleast_1d(figure.subplots(1, len(panels), sharex=True))
    for ax, (kind, tasks) in zip(axes, panels, strict=True):
        for task in tasks:
            steps, ratios = series[task.code]
            ax.plot(steps, ratios, label=task.code, linewidth=1.2)
        ax.set_title(f"{kind.value.capitalize()} tasks")
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("share of the group's samples")
        ax.legend(fontsize=7, ncol=2)
    figure.suptitle("S2Sched sample ratios per task")
    return _save(figure, path)
