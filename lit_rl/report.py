"""``make report``: compare methods from the run folders' ``summary.json`` files.

Writes ``<out>/report.md`` (one table per environment) and ``<out>/<env>.png`` (CLOSE and FAR
return against environment frames, one curve per method: the mean over seeds with the min–max band),
the paper's style of figure. The table reports FAR's minimum and mean over the run as well as its
final value, because vanilla fine-tuning forgets FAR and may re-learn it late.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def load_summaries(runs: Path) -> list[dict]:
    """Every readable fine-tuning summary under ``runs``; unreadable ones are skipped with a warning."""
    summaries = []
    for path in sorted(runs.glob("*/summary.json")):
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            warnings.warn(f"skipping {path}: not valid JSON ({error})", stacklevel=2)
            continue
        if summary.get("method") != "pretrain" and summary.get("eval_history"):
            summary["run"] = path.parent.name
            summaries.append(summary)
    return summaries


def curve(summary: dict, subspace: str) -> tuple[np.ndarray, np.ndarray]:
    history = summary["eval_history"]
    frames = np.array([entry["env_steps"] for entry in history], dtype=float)
    returns = np.array([entry[subspace]["return_mean"] for entry in history], dtype=float)
    return frames, returns


def method_rows(runs: list[dict], subspaces: list[str]) -> dict:
    """Per-method statistics averaged over seeds."""
    row = {"seeds": len(runs), "frames": int(np.mean([r["env_steps"] for r in runs]))}
    for subspace in subspaces:
        ys = [curve(r, subspace)[1] for r in runs]
        row[f"{subspace}_start"] = np.mean([y[0] for y in ys])
        row[f"{subspace}_final"] = np.mean([y[-1] for y in ys])
        row[f"{subspace}_min"] = np.mean([y.min() for y in ys])
        row[f"{subspace}_mean"] = np.mean([y.mean() for y in ys])
    return row


def table(env: str, by_method: dict[str, list[dict]], subspaces: list[str]) -> str:
    columns = ["seeds", "frames"]
    for subspace in subspaces:
        columns += [f"{subspace}_start", f"{subspace}_final", f"{subspace}_min", f"{subspace}_mean"]
    lines = [f"## {env}", "", "| method | " + " | ".join(columns) + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    for method, runs in sorted(by_method.items()):
        row = method_rows(runs, subspaces)
        cells = [f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "`_start` is the pre-trained policy, `_final` the last evaluation, `_min` and `_mean` the",
        "minimum and mean over all evaluations of the run (mean over seeds).",
        "",
    ]
    return "\n".join(lines)


def plot(env: str, by_method: dict[str, list[dict]], subspaces: list[str], out: Path) -> Path:
    fig, axes = plt.subplots(1, len(subspaces), figsize=(5 * len(subspaces), 3.6), squeeze=False)
    for ax, subspace in zip(axes[0], subspaces):
        for method, runs in sorted(by_method.items()):
            frames, _ = curve(runs[0], subspace)
            ys = [np.interp(frames, *curve(r, subspace)) for r in runs]
            mean = np.mean(ys, axis=0)
            (line,) = ax.plot(frames, mean, label=f"{method} ({len(runs)})")
            if len(runs) > 1:
                ax.fill_between(frames, np.min(ys, 0), np.max(ys, 0), alpha=0.2, color=line.get_color())
        ax.set_title(f"{env}: {subspace.upper()}")
        ax.set_xlabel("environment frames")
        ax.set_ylabel("return")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    path = out / f"{env}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(runs: Path, out: Path) -> Path:
    summaries = load_summaries(runs)
    if not summaries:
        raise FileNotFoundError(f"no fine-tuning summaries under {runs}/: run `make finetune METHOD=…` first")
    out.mkdir(parents=True, exist_ok=True)
    by_env: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for summary in summaries:
        by_env[summary["env"]][summary["method"]].append(summary)
    sections = ["# lit_rl report", ""]
    for env, by_method in sorted(by_env.items()):
        first = next(iter(by_method.values()))[0]
        subspaces = [k for k in first["eval_history"][0] if k != "env_steps"]
        sections.append(table(env, by_method, subspaces))
        image = plot(env, by_method, subspaces, out)
        sections += [f"![{env}]({image.name})", ""]
    path = out / "report.md"
    path.write_text("\n".join(sections))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    try:
        path = write_report(args.runs, args.out)
    except FileNotFoundError as error:
        print(f"report: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"report: {path} (plots beside it)")


if __name__ == "__main__":
    main()
