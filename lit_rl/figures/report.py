"""``make report``: compare methods from the run folders' ``summary.json`` files.

Runs are grouped by the env preset they were configured with (``preset`` in the summary; older
summaries without it fall back to ``env``), so a paper-scale preset and a CPU preset of the same
environment never share a row or a curve. Within a preset, runs of the same method are the seeds of
one row.

Writes ``<out>/report.md`` (one table per preset) and ``<out>/<preset>.png`` (return against
environment frames per subspace, one curve per method: the mean over seeds with the min–max band
shaded, and π*'s own return as a dashed horizontal line, the level fine-tuning starts from and
should not fall below on FAR). The table gives, per subspace, the final, lowest and mean return over
the run as mean ± standard deviation over seeds: FAR's minimum and mean show forgetting that a
final value hides (vanilla fine-tuning re-learns FAR late), and the mean CLOSE return is the
``transfer`` score, the area under the downstream curve.

Where the runs have them, two more tables follow: the final value of the per-episode metrics a
scenario reports beside the return (``success_rate``, NetHack's Sokoban ``pits_filled`` and
``max_dlvl``), and where training went (from each run's ``metrics.csv``): the mean share of training
frames in FAR and the share of ended training episodes that reached Dlvl ≥ k — the paper's evidence
that fine-tuning rarely visits FAR (its Fig. 4 and §3 visitation figures).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from callbacks.run_summary import TRANSFER_SUBSPACE, curve_stats, transfer  # noqa: E402

STATS = ("final", "min", "mean")
#: per-episode metrics reported beside the return, when a scenario's evaluation has them
EPISODE_METRICS = ("success_rate", "pits_filled", "max_dlvl")
#: reference policies' evaluations beside the runs (written by ``lit_rl.study``)
REFERENCES = "references.json"
#: the paper's figures at this scale: one file per subspace (Fig. 3a: CLOSE, Fig. 5: FAR)
FIGURES = {"close": "Fig. 3a", "far": "Fig. 5"}
VISIT_LEVELS = (2, 3, 4, 5)


def is_pretraining(summary: dict, run_name: str = "") -> bool:
    """A run that made π* rather than fine-tuned it.

    New summaries say so in ``stage``; older ones only in the run folder's default name
    (``<env>-pretrain-s<seed>``) or, earlier still, in ``method``.
    """
    if "stage" in summary:
        return summary["stage"] == "pretrain"
    return summary.get("method") == "pretrain" or "pretrain" in run_name.split("-")


def preset_of(summary: dict) -> str:
    """The grouping key: the env preset, or the environment for summaries written before presets."""
    return summary.get("preset") or summary["env"]


def load_summaries(runs: Path) -> list[dict]:
    """Every readable fine-tuning summary under ``runs``; unreadable ones are skipped with a warning."""
    summaries = []
    for path in sorted(runs.glob("*/summary.json")):
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            warnings.warn(f"skipping {path}: not valid JSON ({error})", stacklevel=2)
            continue
        if summary.get("eval_history") and not is_pretraining(summary, path.parent.name):
            summary["run"] = path.parent.name
            summary["visitation"] = training_visitation(path.parent / "metrics.csv")
            summaries.append(summary)
    return summaries


def load_references(runs: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Policies evaluated beside the runs, e.g. ``make study``'s uniformly random policy:
    ``runs/references.json`` = ``{name: {subspace: metrics}}`` from the same evaluator, episodes and
    seed as the runs' own evaluations; ``{}`` when there is none."""
    path = runs / REFERENCES
    return json.loads(path.read_text()) if path.is_file() else {}


def training_visitation(metrics_csv: Path) -> dict[str, float]:
    """Where a run's training went: the mean share of training frames in FAR
    (``train/visit/far``) and, for every ``train/visit/episodes_dlvl>=k`` column, the share of the
    training episodes that ended in the run and reached Dlvl ≥ k (sums over the logged windows)."""
    if not metrics_csv.is_file():
        return {}
    far, sums = [], defaultdict(float)
    with metrics_csv.open() as handle:
        for row in csv.DictReader(handle):
            if row.get("train/visit/far"):
                far.append(float(row["train/visit/far"]))
            for key, value in row.items():
                if key and key.startswith("train/visit/episodes") and value:
                    sums[key.removeprefix("train/visit/")] += float(value)
    shares = {"far_frames": float(np.mean(far))} if far else {}
    episodes = sums.pop("episodes", 0.0)
    for key, count in sorted(sums.items()):
        if key.startswith("episodes_dlvl>=") and episodes > 0:
            shares[key.removeprefix("episodes_")] = count / episodes
    return shares


def group_by_preset(summaries: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """``{preset: {method: [summary per seed]}}``, each list sorted by seed."""
    groups: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for summary in summaries:
        groups[preset_of(summary)][summary["method"]].append(summary)
    for by_method in groups.values():
        for runs in by_method.values():
            runs.sort(key=lambda s: (s.get("seed") is None, s.get("seed")))
    return {preset: dict(by_method) for preset, by_method in groups.items()}


def curve(summary: dict, subspace: str) -> tuple[np.ndarray, np.ndarray]:
    history = [entry for entry in summary["eval_history"] if subspace in entry]
    frames = np.array([entry["env_steps"] for entry in history], dtype=float)
    returns = np.array([entry[subspace]["return_mean"] for entry in history], dtype=float)
    return frames, returns


def run_stats(summary: dict) -> dict[str, float]:
    """One run's figures, recomputed from its history (so summaries of any age agree)."""
    history = summary["eval_history"]
    row = {
        f"{subspace}_{stat}": values[stat]
        for subspace, values in curve_stats(history).items()
        for stat in ("start",) + STATS
    }
    row["transfer"] = transfer(history)
    return row


def spread(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation over seeds (``None`` for a single seed: no spread known)."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else None


def method_row(runs: list[dict], subspaces: list[str]) -> dict:
    """Per-method statistics over seeds: ``{column: (mean, std)}`` plus seeds and frames."""
    per_run = [run_stats(r) for r in runs]
    row: dict = {"seeds": len(runs), "frames": int(np.mean([r["env_steps"] for r in runs]))}
    for column in [f"{s}_{stat}" for s in subspaces for stat in STATS] + ["transfer"]:
        values = [stats[column] for stats in per_run if stats.get(column) is not None]
        row[column] = spread(values) if values else None
    return row


def pretrained_reference(runs: list[dict], subspace: str) -> float | None:
    """π*'s own mean return on ``subspace`` (its evaluation at frame 0), averaged over runs."""
    values = [
        r["pretrained"][subspace]["return_mean"]
        for r in runs
        if r.get("pretrained") and subspace in r["pretrained"]
    ]
    return float(np.mean(values)) if values else None


def columns_for(subspaces: list[str]) -> list[str]:
    return ["seeds", "frames"] + [f"{s}_{stat}" for s in subspaces for stat in STATS] + ["transfer"]


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, tuple):
        mean, std = value
        return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"
    return str(value)


def table(
    preset: str, by_method: dict[str, list[dict]], subspaces: list[str], references: dict | None = None
) -> str:
    columns = columns_for(subspaces)
    lines = [f"## {preset}", "", "| method | " + " | ".join(columns) + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    every_run = [r for runs in by_method.values() for r in runs]
    reference = {s: pretrained_reference(every_run, s) for s in subspaces}
    # π* without fine-tuning: a flat curve at its frame-0 evaluation (final = min = mean)
    flat = {f"{s}_{stat}": reference[s] for s in subspaces for stat in STATS}
    flat["transfer"] = reference.get(TRANSFER_SUBSPACE)
    cells = ["π* (not fine-tuned)", "", ""] + [
        "–" if flat[c] is None else f"{flat[c]:.1f}" for c in columns[2:]
    ]
    lines.append("| " + " | ".join(cells) + " |")
    for name, values in (references or {}).items():
        flat = {f"{s}_{stat}": values[s]["return_mean"] for s in subspaces if s in values for stat in STATS}
        flat["transfer"] = values.get(TRANSFER_SUBSPACE, {}).get("return_mean")
        ref_cells = [f"{name} policy", "", ""] + [
            "–" if flat.get(c) is None else f"{flat[c]:.1f}" for c in columns[2:]
        ]
        lines.append("| " + " | ".join(ref_cells) + " |")
    for method, runs in sorted(by_method.items()):
        row = method_row(runs, subspaces)
        lines.append(f"| {method} | " + " | ".join(_cell(row[c]) for c in columns) + " |")
    lines += [
        "",
        "Mean ± standard deviation over seeds. `_final` is the last evaluation, `_min` and `_mean` the",
        "lowest and the mean return over all evaluations of the run (π*'s included). `transfer` =",
        f"`{TRANSFER_SUBSPACE}_mean`, the mean downstream ({TRANSFER_SUBSPACE.upper()}) return over the "
        "run (the area under its curve).",
        "The π* row is the pre-trained policy's own evaluation, as if it were never fine-tuned; plots",
        "shade the min–max range over seeds and draw π* as a dashed line.",
        "",
    ]
    return "\n".join(lines)


def episode_metrics_table(by_method: dict[str, list[dict]], subspaces: list[str]) -> str:
    """Final per-episode metrics (success, pits filled, deepest level) per subspace, with π*'s."""
    every_run = [r for runs in by_method.values() for r in runs]
    latest = every_run[0]["eval_history"][-1]
    columns = [(s, m) for s in subspaces for m in EPISODE_METRICS if m in latest.get(s, {})]
    if not columns:
        return ""
    names = [f"{s}_{m}" for s, m in columns]
    lines = ["| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    pretrained = [r["pretrained"] for r in every_run if r.get("pretrained")]
    reference = [_cell(spread([p[s][m] for p in pretrained if m in p.get(s, {})]) if pretrained else None)
                 for s, m in columns]  # fmt: skip
    lines.append("| π* (not fine-tuned) | " + " | ".join(reference) + " |")
    for method, runs in sorted(by_method.items()):
        cells = [_cell(spread([r["eval_history"][-1][s][m] for r in runs])) for s, m in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(["Final per-episode metrics (mean ± std over seeds):", "", *lines, ""])


def visitation_table(by_method: dict[str, list[dict]]) -> str:
    """Training visitation per method (mean ± std over seeds), when the runs logged it."""
    keys = sorted({k for runs in by_method.values() for r in runs for k in r.get("visitation", {})})
    if not keys:
        return ""
    lines = ["| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for method, runs in sorted(by_method.items()):
        cells = []
        for key in keys:
            values = [r["visitation"][key] for r in runs if key in r.get("visitation", {})]
            cells.append(_cell(spread([100 * v for v in values]) if values else None))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    note = (
        "Where training went, in % (from metrics.csv): `far_frames` = mean share of training frames "
        "in FAR; `dlvl>=k` = share of ended training episodes that reached Dlvl ≥ k."
    )
    return "\n".join([note, "", *lines, ""])


def standard_error(metrics: dict) -> float:
    """Standard error of one evaluation's mean return: its episodes' std / √episodes."""
    return float(metrics.get("return_std", 0.0)) / max(1.0, float(metrics.get("episodes", 1))) ** 0.5


def precision_table(by_method: dict[str, list[dict]], subspaces: list[str], references: dict) -> str:
    """Final return per subspace with both kinds of spread: over seeds, and the evaluation's own
    standard error (episodes' std / √episodes, mean over seeds), beside π*'s and the references'.
    A gap between methods means something only where it is well above both."""
    every_run = [r for runs in by_method.values() for r in runs]
    pretrained = [r["pretrained"] for r in every_run if r.get("pretrained")]
    names = [f"{s}_{part}" for s in subspaces for part in ("final", "eval_se", "vs_pi*")]
    lines = ["| policy | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    star = {s: pretrained_reference(every_run, s) for s in subspaces}
    for name, evaluations in [("π* (not fine-tuned)", pretrained[:1])] + [
        (f"{n} policy", [v]) for n, v in references.items()
    ]:
        cells = []
        for s in subspaces:
            found = [e[s] for e in evaluations if s in e]
            cells += (
                [_cell((found[0]["return_mean"], None)), f"{standard_error(found[0]):.1f}", ""]
                if found
                else ["–"] * 3
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for method, runs in sorted(by_method.items()):
        cells = []
        for s in subspaces:
            finals = [r["eval_history"][-1][s] for r in runs]
            mean, std = spread([f["return_mean"] for f in finals])
            se = float(np.mean([standard_error(f) for f in finals]))
            gap = "–" if star[s] is None else f"{mean - star[s]:+.1f}"
            cells += [_cell((mean, std)), f"{se:.1f}", gap]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    note = (
        "Final evaluation: return mean ± std over seeds; `eval_se` = the evaluation's standard error "
        "(std of the episodes' returns / √episodes, mean over seeds); `vs_pi*` = final − π*'s return."
    )
    return "\n".join([note, "", *lines, ""])


def mean_curve(runs: list[dict], subspace: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frames, mean, min and max over runs, on the evaluation frames of the shortest run."""
    curves = [curve(r, subspace) for r in runs]
    frames = min((f for f, _ in curves), key=lambda f: f[-1])
    ys = np.array([np.interp(frames, f, y) for f, y in curves])
    return frames, ys.mean(0), ys.min(0), ys.max(0)


def plot(preset: str, by_method: dict[str, list[dict]], subspaces: list[str], out: Path) -> Path:
    fig, axes = plt.subplots(1, len(subspaces), figsize=(5 * len(subspaces), 3.6), squeeze=False)
    every_run = [r for runs in by_method.values() for r in runs]
    for ax, subspace in zip(axes[0], subspaces):
        for method, runs in sorted(by_method.items()):
            frames, mean, low, high = mean_curve(runs, subspace)
            (line,) = ax.plot(frames, mean, label=f"{method} ({len(runs)} seeds)")
            if len(runs) > 1:
                ax.fill_between(frames, low, high, alpha=0.2, color=line.get_color())
        reference = pretrained_reference(every_run, subspace)
        if reference is not None:
            ax.axhline(reference, color="black", linestyle="--", linewidth=1, label="π* (before fine-tuning)")
        ax.set_title(f"{preset}: {subspace.upper()}")
        ax.set_xlabel("environment frames")
        ax.set_ylabel("return")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    return save(fig, out / f"{preset}.png")


def plot_subspace(
    preset: str, by_method: dict[str, list[dict]], subspace: str, references: dict, out: Path
) -> Path:
    """One subspace's return over fine-tuning per method (the paper's Fig. 3a for CLOSE, Fig. 5 for
    FAR): mean over seeds, the min–max band over seeds, the evaluations' mean standard error as error
    bars, π* dashed and each reference policy dotted."""
    fig, ax = plt.subplots(figsize=(6, 4))
    every_run = [r for runs in by_method.values() for r in runs]
    for method, runs in sorted(by_method.items()):
        frames, mean, low, high = mean_curve(runs, subspace)
        errors = [np.interp(frames, *_se_curve(r, subspace)) for r in runs]
        (line,) = ax.plot(frames, mean, marker="o", markersize=3, label=f"{method} ({len(runs)} seeds)")
        ax.errorbar(frames, mean, yerr=np.mean(errors, axis=0), fmt="none", color=line.get_color(), capsize=2)
        if len(runs) > 1:
            ax.fill_between(frames, low, high, alpha=0.15, color=line.get_color())
    reference = pretrained_reference(every_run, subspace)
    if reference is not None:
        ax.axhline(reference, color="black", linestyle="--", linewidth=1, label="π* (before fine-tuning)")
    for name, values in references.items():
        if subspace in values:
            ax.axhline(values[subspace]["return_mean"], color="grey", linestyle=":", label=f"{name} policy")
    figure = FIGURES.get(subspace)
    ax.set_title(
        f"{preset}: {subspace.upper()} score during fine-tuning" + (f" (paper {figure})" if figure else "")
    )
    ax.set_xlabel("environment frames")
    ax.set_ylabel("score gained per episode")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, out / f"{preset}_{subspace}.png")


def _se_curve(summary: dict, subspace: str) -> tuple[np.ndarray, np.ndarray]:
    history = [entry for entry in summary["eval_history"] if subspace in entry]
    return (np.array([e["env_steps"] for e in history], dtype=float),
            np.array([standard_error(e[subspace]) for e in history]))  # fmt: skip


def plot_visitation(preset: str, by_method: dict[str, list[dict]], out: Path) -> Path | None:
    """Where fine-tuning went (the paper's Fig. 4 at this scale): per method, the share of ended
    training episodes that reached Dlvl ≥ k, mean and std over seeds. Near zero at the FAR depth
    means fine-tuning hardly trains where FAR is evaluated."""
    keys = [f"dlvl>={k}" for k in VISIT_LEVELS]
    if not any(k in r.get("visitation", {}) for runs in by_method.values() for r in runs for k in keys):
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / max(1, len(by_method))
    for i, (method, runs) in enumerate(sorted(by_method.items())):
        shares = np.array([[100 * r.get("visitation", {}).get(k, 0.0) for k in keys] for r in runs])
        error = shares.std(0, ddof=1) if len(runs) > 1 else None
        ax.bar(np.arange(len(keys)) + i * width, shares.mean(0), width, yerr=error, capsize=2,
               label=f"{method} ({len(runs)} seeds)")  # fmt: skip
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, [f"Dlvl ≥ {k}" for k in VISIT_LEVELS])
    ax.set_ylabel("% of ended training episodes")
    ax.set_title(f"{preset}: deepest level of training episodes (paper Fig. 4)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return save(fig, out / f"{preset}_visitation.png")


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(runs: Path, out: Path) -> Path:
    summaries = load_summaries(runs)
    references = load_references(runs)
    if not summaries:
        raise FileNotFoundError(f"no fine-tuning summaries under {runs}/: run `make finetune METHOD=…` first")
    out.mkdir(parents=True, exist_ok=True)
    sections = ["# lit_rl report", ""]
    for preset, by_method in sorted(group_by_preset(summaries).items()):
        first = next(iter(by_method.values()))[0]
        subspaces = [k for k in first["eval_history"][0] if k != "env_steps"]
        sections.append(table(preset, by_method, subspaces, references))
        sections.append(precision_table(by_method, subspaces, references))
        sections += [episode_metrics_table(by_method, subspaces), visitation_table(by_method)]
        image = plot(preset, by_method, subspaces, out)
        sections += [f"![{preset}]({image.name})", ""]
        figures = [plot_subspace(preset, by_method, s, references, out) for s in subspaces]
        figures.append(plot_visitation(preset, by_method, out))
        sections += [f"![{path.stem}]({path.name})" for path in figures if path is not None] + [""]
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
