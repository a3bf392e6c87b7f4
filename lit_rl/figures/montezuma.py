"""Montezuma forgetting-study figure and table (paper §4 at laptop scale): Room-7 success from the
pool's start states over fine-tuning from Room 1, one curve per method (mean over seeds, each seed
thin), with π*'s own success as the dashed level; beside it the share of training frames spent in
Room 7 or beyond (the paper's "rooms visited": FAR goes unvisited, so nothing there is retrained).

    python -m lit_rl.figures.montezuma --runs runs/montezuma-*-s* --out docs/

reads each run folder's ``summary.json`` (``eval_history``, ``pretrained``) and ``metrics.csv``
(``train/visit/far``) and writes ``montezuma_forgetting.png`` and ``montezuma_table.md``.
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

ORDER = ("none", "bc", "ewc")


def load(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    with open(run / "metrics.csv") as f:
        visits = [float(r["train/visit/far"]) for r in csv.DictReader(f) if r.get("train/visit/far")]
    history = [e for e in summary["eval_history"] if "success_rate" in e.get("far", {})]
    return {
        "method": summary["method"],
        "seed": summary["seed"],
        "frames": np.array([e["env_steps"] for e in history], dtype=float),
        "far": np.array([e["far"]["success_rate"] for e in history]),
        "episodes": history[0]["far"]["episodes"] if history else 0,
        "close_return": np.array([e["close"]["return_mean"] for e in history]),
        "pretrained_far": summary.get("pretrained", {}).get("far", {}).get("success_rate"),
        "visit_far": float(np.mean(visits)) if visits else float("nan"),
        "finished": summary.get("finished", True),  # a run still going writes its summary too
    }


def by_method(runs: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        groups[run["method"]].append(run)
    return dict(sorted(groups.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else 99))


def figure(groups: dict[str, list[dict]], out: Path) -> Path:
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 1]})
    reference = [r["pretrained_far"] for rs in groups.values() for r in rs if r["pretrained_far"] is not None]
    for i, (method, runs) in enumerate(groups.items()):
        colour = f"C{i}"
        n = min(len(r["far"]) for r in runs)
        for run in runs:
            ax.plot(run["frames"][:n] / 1000, run["far"][:n], color=colour, alpha=0.35, lw=0.8)
        mean = np.mean([r["far"][:n] for r in runs], axis=0)
        ax.plot(
            runs[0]["frames"][:n] / 1000,
            mean,
            color=colour,
            marker="o",
            label=f"{method} ({len(runs)} seeds)",
        )
        bx.bar(i, np.mean([r["visit_far"] for r in runs]), color=colour)
    if reference:
        ax.axhline(np.mean(reference), color="k", ls="--", lw=1, label="π*")
    ax.set_xlabel("fine-tuning frames from Room 1 (k)")
    ax.set_ylabel("Room-7 success rate")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8)
    visits = [np.mean([r["visit_far"] for r in runs]) for runs in groups.values()]
    for i, share in enumerate(visits):
        bx.text(i, share, f"{share:.1%}", ha="center", va="bottom", fontsize=8)
    bx.set_ylim(0, max(0.05, 1.25 * max(visits)))
    bx.set_xticks(range(len(groups)), list(groups))
    bx.set_ylabel("share of training frames in Room ≥ 7")
    fig.tight_layout()
    path = out / "montezuma_forgetting.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _stat(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f} ± {values.std():.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def table(groups: dict[str, list[dict]]) -> str:
    lines = [
        "| method | seeds | π* | lowest | final | mean over the run | CLOSE return, final "
        "| frames in Room ≥ 7 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, runs in groups.items():
        lines.append(
            f"| {method} | {len(runs)} | {_stat([r['far'][0] for r in runs])} "
            f"| {_stat([r['far'].min() for r in runs])} | {_stat([r['far'][-1] for r in runs])} "
            f"| {_stat([r['far'][1:].mean() for r in runs])} "
            f"| {_stat([r['close_return'][-1] for r in runs])} | {_stat([r['visit_far'] for r in runs])} |"
        )
    episodes = {r["episodes"] for rs in groups.values() for r in rs}
    lines += ["", f"Room-7 success on {', '.join(map(str, sorted(episodes)))} episodes per point; "
              "mean ± standard deviation over seeds; the π* column is the first evaluation, the mean is "
              "over the later ones."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args(argv)
    finished = [run for run in args.runs if (run / "summary.json").is_file()]  # fine-tuning, done
    runs = [r for r in map(load, finished) if r["method"] != "pretrain" and r["finished"]]
    if not runs:
        raise SystemExit(f"error: no finished run (summary.json) among --runs {args.runs[0]} …")
    groups = by_method(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    print(figure(groups, args.out))
    text = table(groups)
    (args.out / "montezuma_table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
