"""RoboticSequence figures (paper §5b): success per stage over fine-tuning, and the 2-D PCA of the
log-likelihood vectors of π*'s own push-wall transitions under each run's policy over training.

    python -m lit_rl.figures.robotic --runs runs/robotic-none-s0 runs/robotic-bc-s0 … --out docs/

reads each run folder's ``summary.json`` (``eval_history``) and ``loglik/<frames>.pt`` (written by
``SACFineTuning`` every ``loglik_every_frames``) and writes ``robotic_success.png``,
``robotic_loglik_pca.png`` and ``robotic_table.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from lit_rl.safe_load import safe_load

LOGLIK_FLOOR = -50.0
PANELS = (
    ("push_wall", "success_rate", "push-wall entered directly"),
    ("far", "peg_unplug_side_success", "peg-unplug-side (FAR start)"),
    ("close", "hammer_success", "hammer (sequence)"),
    ("close", "success_rate", "whole sequence"),
)


def load(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    summary["run"] = run
    return summary


def success_figure(runs: list[dict], out: Path) -> Path:
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4), squeeze=False)
    colours: dict[str, str] = {}
    for ax, (subspace, metric, title) in zip(axes[0], PANELS, strict=True):
        for summary in runs:
            history = [e for e in summary["eval_history"] if subspace in e and metric in e[subspace]]
            frames = [e["env_steps"] / 1000 for e in history]
            values = [e[subspace][metric] for e in history]
            label = f"{summary['method']} s{summary['seed']}"
            colour = colours.setdefault(summary["method"], f"C{len(colours)}")
            style = "-" if summary["seed"] == 0 else "--"
            ax.plot(frames, values, style, color=colour, label=label, marker=".")
        ax.set_title(title)
        ax.set_xlabel("fine-tuning frames (k)")
        ax.set_ylim(-0.05, 1.05)
    axes[0][0].set_ylabel("success rate")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path = out / "robotic_success.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loglik_pca(vectors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each run's [evaluations, transitions] log-likelihoods as 2-D points: every value floored at
    ``LOGLIK_FLOOR`` first, then one PCA (2 components) fitted on all runs' vectors together. The
    floor is what keeps the figure readable: a policy that lost push-wall scores some transitions at
    −10⁵ and more, and unfloored, those few values are the first components and every other run
    sits in one point."""
    floored = [v.clamp(min=LOGLIK_FLOOR) for v in vectors]
    stacked = torch.cat(floored)
    mean = stacked.mean(0)
    _, _, v = torch.linalg.svd(stacked - mean, full_matrices=False)
    return [(x - mean) @ v[:2].T for x in floored]


def loglik_figure(runs: list[dict], out: Path) -> Path | None:
    """The PCA of the per-transition log-likelihoods of π*'s push-wall transitions
    (``loglik_pca``), one trajectory per run over training, π*'s start point starred."""
    series = []
    for summary in runs:
        files = sorted((summary["run"] / "loglik").glob("*.pt"))
        points = [safe_load(f) for f in files]
        if points:
            series.append(
                (summary, [p["env_steps"] for p in points], torch.stack([p["loglik"] for p in points]))
            )
    if not series or len({s[2].shape[1] for s in series}) != 1:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    colours: dict[str, str] = {}
    projected = loglik_pca([s[2] for s in series])
    for (summary, frames, _), xy in zip(series, projected, strict=True):
        colour = colours.setdefault(summary["method"], f"C{len(colours)}")
        ax.plot(xy[:, 0], xy[:, 1], "-o", color=colour, label=f"{summary['method']} s{summary['seed']}", ms=3)
        ax.annotate(f"{frames[-1] // 1000}k", xy[-1].tolist(), fontsize=7, color=colour)
    ax.plot(*projected[0][0].tolist(), "k*", ms=12, label="π* (frame 0)")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"log π_θ(a|s) on π*'s push-wall transitions (floored at {LOGLIK_FLOOR:g})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "robotic_loglik_pca.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table(runs: list[dict]) -> str:
    rows = ["| method | seed | frames | wall time | frames/s | push-wall start → min → final | "
            "peg (FAR) start → final | hammer final | push final | sequence final | "
            "π* log-lik start → final |",
            "|---|---|---:|---:|---:|---|---|---|---|---|---|"]  # fmt: skip
    for s in sorted(runs, key=lambda r: (r["method"], r["seed"])):
        h = s["eval_history"]
        pw = [e["push_wall"]["success_rate"] for e in h]
        peg = [e["far"]["peg_unplug_side_success"] for e in h]
        files = sorted((s["run"] / "loglik").glob("*.pt"))
        ll = [safe_load(f)["loglik"].mean().item() for f in (files[:1] + files[-1:])]
        last = h[-1]["close"]
        rows.append(
            f"| {s['method']} | {s['seed']} | {s['env_steps']:,} | {s['wall_time_s'] / 60:.0f} min | "
            f"{s['env_steps_per_s']:.0f} | {pw[0]:.2f} → {min(pw):.2f} → {pw[-1]:.2f} | "
            f"{peg[0]:.2f} → {peg[-1]:.2f} | {last['hammer_success']:.2f} | {last['push_success']:.2f} | "
            f"{last['success_rate']:.2f} | " + (" → ".join(f"{x:.1f}" for x in ll) if ll else "–") + " |"
        )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [load(r) for r in args.runs if (r / "summary.json").is_file()]
    print(success_figure(runs, args.out))
    print(loglik_figure(runs, args.out))
    (args.out / "robotic_table.md").write_text(table(runs))
    print(args.out / "robotic_table.md")


if __name__ == "__main__":
    main()
