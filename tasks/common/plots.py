"""Pictures for the MLflow UI and the run report (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def histogram(values: list[float], path: Path, title: str, xlabel: str, threshold: float | None = None,
              bins_range: tuple[float, float] | None = (0, 1)) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(values, bins=40, range=bins_range, color="#4c72b0")
    if threshold is not None:
        ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold {threshold}")
        ax.legend()
    ax.set(title=title, xlabel=xlabel, ylabel="pairs")
    return _save(fig, path)


def bars(values: dict[str, float], path: Path, title: str, xlabel: str = "count") -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(values) or ["(none)"]
    ax.barh(names, [values.get(n, 0) for n in names], color="#55a868")
    ax.set(title=title, xlabel=xlabel)
    return _save(fig, path)


def curves(series: dict[str, list[tuple[int, float]]], path: Path, title: str, ylabel: str,
           xlabel: str = "step") -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, points in series.items():
        if points:
            ax.plot(*zip(*points), marker=".", label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend()
    return _save(fig, path)


def versus(candidate: dict[str, float], reference: dict[str, float], path: Path, title: str) -> Path:
    """Each figure relative to the reference's (reference = 1), raw values written on the bars."""
    fig, ax = plt.subplots(figsize=(6, 0.7 * len(candidate) + 1.2))
    names = list(candidate)
    rows = range(len(names))
    ratios = [candidate[n] / reference[n] if reference[n] else 1.0 for n in names]
    ax.barh([r + 0.2 for r in rows], [1.0] * len(names), height=0.4, color="#8c8c8c", label="champion")
    ax.barh([r - 0.2 for r in rows], ratios, height=0.4, color="#4c72b0", label="candidate")
    for r, n, ratio in zip(rows, names, ratios):
        ax.text(ratio, r - 0.2, f" {candidate[n]:g}", va="center", fontsize=8)
        ax.text(1.0, r + 0.2, f" {reference[n]:g}", va="center", fontsize=8)
    ax.set_yticks(list(rows), names)
    ax.axvline(1.0, color="#333333", linewidth=0.8)
    ax.set(title=title, xlabel="relative to the champion")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)
