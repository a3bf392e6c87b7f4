"""The MiniHack study's own figures (docs/minihack.md), beside the generic report's return curves.

``<preset>_phases.png``: over fine-tuning, per method (mean over seeds, the min–max band shaded),
(a) the CLOSE phase's success (a CLOSE episode reached the FAR room, ``reached_far``), (b) FAR
success from the hand-over and (c) the whole task's success from CLOSE, with π*'s own value dashed
and the random policy's dotted. ``<preset>_far_visits.png``: the share of training frames spent in
the FAR room over training (``train/visit/far`` from metrics.csv, averaged per 8-batch window):
FAR unvisited means nothing there is trained.

    python -m lit_rl.figures.minihack --runs studies/minihack/runs --out studies/minihack/reports
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

#: (title, subspace, metric) of each panel of the phases figure
PANELS = (
    ("CLOSE phase: reached the FAR room", "close", "reached_far"),
    ("FAR success (from the hand-over)", "far", "success_rate"),
    ("whole task from CLOSE", "close", "success_rate"),
)
WINDOW = 8


def load_runs(runs: Path, preset: str) -> dict[str, list[dict]]:
    """Finished or running fine-tuning runs of ``preset`` under ``runs``, by method."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(runs.glob(f"{preset}-*-s*/summary.json")):
        summary = json.loads(path.read_text())
        if summary.get("stage") == "pretrain" or not summary.get("eval_history"):
            continue
        summary["visits"] = far_visits(path.parent / "metrics.csv")
        groups[summary["method"]].append(summary)
    return dict(sorted(groups.items()))


def far_visits(metrics_csv: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames, share of training frames in FAR) per window of ``WINDOW`` logged batches."""
    frames, shares = [], []
    if metrics_csv.is_file():
        with metrics_csv.open() as handle:
            for row in csv.DictReader(handle):
                if row.get("train/visit/far") and row.get("train/env_frames"):
                    frames.append(float(row["train/env_frames"]))
                    shares.append(float(row["train/visit/far"]))
    n = len(frames) // WINDOW * WINDOW
    if n == 0:
        return np.array(frames), np.array(shares)
    return (np.array(frames[:n]).reshape(-1, WINDOW).max(1),
            np.array(shares[:n]).reshape(-1, WINDOW).mean(1))  # fmt: skip


def metric_curve(summary: dict, subspace: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    history = [e for e in summary["eval_history"] if metric in e.get(subspace, {})]
    return (np.array([e["env_steps"] for e in history], dtype=float),
            np.array([e[subspace][metric] for e in history], dtype=float))  # fmt: skip


def band(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """Frames of the shortest curve; mean, min and max over curves there."""
    frames = min((f for f, _ in curves), key=len)
    ys = np.array([np.interp(frames, f, y) for f, y in curves])
    return frames, ys.mean(0), ys.min(0), ys.max(0)


def plot_phases(groups: dict[str, list[dict]], references: dict, preset: str, out: Path) -> Path:
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 3.8))
    every_run = [r for runs in groups.values() for r in runs]
    for ax, (title, subspace, metric) in zip(axes, PANELS):
        for method, runs in groups.items():
            frames, mean, low, high = band([metric_curve(r, subspace, metric) for r in runs])
            label = f"{method} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
            (line,) = ax.plot(frames, mean, marker="o", markersize=3, label=label)
            ax.fill_between(frames, low, high, alpha=0.15, color=line.get_color())
        star = [r["pretrained"][subspace][metric] for r in every_run if r.get("pretrained")]
        if star:
            ax.axhline(np.mean(star), color="black", linestyle="--", linewidth=1, label="π*")
        random = references.get("random", {}).get(subspace, {}).get(metric)
        if random is not None:
            ax.axhline(random, color="grey", linestyle=":", label="random policy")
        ax.set_title(f"{preset}: {title}", fontsize=9)
        ax.set_xlabel("fine-tuning frames")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of evaluation episodes")
    axes[-1].legend(fontsize=7)
    return save(fig, out / f"{preset}_phases.png")


def plot_far_visits(groups: dict[str, list[dict]], preset: str, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for method, runs in groups.items():
        curves = [r["visits"] for r in runs if len(r["visits"][0])]
        if not curves:
            continue
        frames, mean, low, high = band(curves)
        label = f"{method} ({len(curves)} seed{'s' if len(curves) > 1 else ''})"
        (line,) = ax.plot(frames, 100 * mean, label=label)
        ax.fill_between(frames, 100 * low, 100 * high, alpha=0.15, color=line.get_color())
    ax.set_title(f"{preset}: training frames in the FAR room ({WINDOW}-batch windows)", fontsize=9)
    ax.set_xlabel("fine-tuning frames")
    ax.set_ylabel("% of training frames in FAR")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, out / f"{preset}_far_visits.png")


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_figures(runs: Path, out: Path, preset: str) -> list[Path]:
    """Both figures for the runs of ``preset`` (none when no run has evaluated yet)."""
    groups = load_runs(runs, preset)
    if not groups:
        return []
    out.mkdir(parents=True, exist_ok=True)
    references_file = runs / "references.json"
    references = json.loads(references_file.read_text()) if references_file.is_file() else {}
    return [plot_phases(groups, references, preset, out), plot_far_visits(groups, preset, out)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("studies/minihack/runs"))
    parser.add_argument("--out", type=Path, default=Path("studies/minihack/reports"))
    parser.add_argument("--preset", default="minihack")
    args = parser.parse_args(argv)
    for path in write_figures(args.runs, args.out, args.preset):
        print(path)


if __name__ == "__main__":
    main()
