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


def histogram(values: list[float], path: Path, title: str, xlabel: str, threshold: float | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(values, bins=40, range=(0, 1), color="#4c72b0")
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


def curves(series: dict[str, list[tuple[int, float]]], path: Path, title: str, ylabel: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, points in series.items():
        if points:
            ax.plot(*zip(*points), marker=".", label=name)
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.legend()
    return _save(fig, path)
