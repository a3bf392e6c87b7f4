"""``make apple-figures``: the paper's AppleRetrieval forgetting figures (appendix A, Figs 10–11).

For vanilla fine-tuning (no retention) the study pre-trains π* on FAR (phase 2) and fine-tunes it
from CLOSE (phase 1) for

- several corridor lengths M at the default observation scale c (Fig. 10: forgetting grows with M,
  because the agent reaches phase 2 later and so keeps fitting phase 1 alone for longer), and
- several observation scales c at M = 30 (Fig. 11: forgetting grows as c shrinks, because SGD moves
  the weight w of the logistic actor σ(w·o + b) c times as fast as the bias b both phases share),

each over several seeds, and draws per sweep: FAR return over fine-tuning, the final success rate of
the whole task (a CLOSE episode: to the apple and back) and of FAR, the depth of forgetting (π*'s
FAR return minus the lowest during fine-tuning) and the ratio |b|/|w| of the actor over
fine-tuning, with the mean over seeds and the min–max range. Both phases can only be solved at once
when |b|/|w| < c (phase 1 needs b − w·c > 0, phase 2 needs b + w·c < 0), so the figure draws c as a
reference line.

Every run is a real ``lit-rl fit`` through the public CLI with the project's configs
(``configs/base.yaml``, ``configs/env/apple.yaml``, ``configs/pretrain/apple.yaml`` for π*),
overriding only the corridor (``--model.scenario.init_args.length`` / ``scale``), the budget and
the seed, so the figures show the same training as ``make finetune METHOD=none``. The paper gives no
learning rate, budget, seeds or lists of M and c (its REINFORCE settings are not published); the
defaults below are this project's own choices, sized to finish in about half an hour on 2 CPU cores.

π* is pre-trained once per (c, seed) on the M = 30 corridor and starts the fine-tuning of every M
(see ``PiStar`` for why). Layout: ``<runs>/pi_star/c<c>-s<seed>/{pretrain/, pi_star.pt}`` and
``<runs>/M<M>-c<c>-s<seed>/finetune/``, each run's log beside its folder. The study is resumable: a
finished run (``summary.json`` with ``finished``) is skipped, an interrupted one continues from its
last checkpoint, so rerunning the command after a crash or with more seeds only runs what is
missing. The cell both sweeps share (M = 30 at the default c) runs once.

The actor's (w, b) come from the ``callbacks.LogisticActorTrace`` callback added to the fine-tuning
runs (see its docstring for why a callback and not the checkpoints).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lit_rl.training.run_identity import run_state  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TRACE_FILE = "logistic_actor.json"

# The project's own choices (the paper publishes none of them); see docs/apple.md.
LENGTHS = (10, 20, 30, 40)
SCALES = (0.05, 0.1, 0.3, 1.0)
SCALE_SWEEP_LENGTH = 30
DEFAULT_SCALE = 0.1
SEEDS = (0, 1, 2)
BUDGET = 1_000_000


@dataclass(frozen=True)
class Cell:
    """One fine-tuning run: corridor length M, observation scale c, seed."""

    length: int
    scale: float
    seed: int

    @property
    def name(self) -> str:
        return f"M{self.length}-c{self.scale:g}-s{self.seed}"


@dataclass(frozen=True)
class PiStar:
    """One pre-trained policy: observation scale c and seed (its corridor: ``--pretrain-length``).

    The logistic actor sees only o = ±c, never x or M, and phase 2's answer (walk left) is the same
    for every M, so one π* per (c, seed) starts the fine-tuning of every M, as in the paper, where
    the weights trained on phase 2 are the initialisation. Pre-training each M for the same frames
    instead would confound the sweep: short corridors finish more episodes and push π*'s bias
    further (seed 0: b = −3.76 at M = 10 against −2.31 at M = 30), so fine-tuning would need longer
    to move it for reasons unrelated to how late FAR is reached.
    """

    scale: float
    seed: int

    @property
    def name(self) -> str:
        return f"c{self.scale:g}-s{self.seed}"


def cells(lengths, scales, seeds, default_scale: float, scale_length: int) -> list[Cell]:
    """The length sweep at ``default_scale`` and the scale sweep at ``scale_length``, shared once."""
    combos = [(m, default_scale) for m in lengths] + [(scale_length, c) for c in scales]
    unique = list(dict.fromkeys(combos))
    return [Cell(m, c, s) for m, c in unique for s in seeds]


def pi_stars(todo: list[Cell]) -> list[PiStar]:
    return list(dict.fromkeys(PiStar(cell.scale, cell.seed) for cell in todo))


def policy_path(root: Path, scale: float, seed: int) -> Path:
    return root / "pi_star" / PiStar(scale, seed).name / "pi_star.pt"


def config_args(*names: str) -> list[str]:
    return [arg for name in names for arg in ("--config", str(ROOT / "configs" / name))]


def fit_args(
    length: int, scale: float, seed: int, run_dir: Path, pretrain: bool, policy: Path, budget, extra
) -> list[str]:
    """``lit-rl fit`` arguments of a pre-training (π* → ``policy``) or fine-tuning (from it) run."""
    configs = ["base.yaml", "env/apple.yaml"]
    configs += ["pretrain/apple.yaml"] if pretrain else []
    configs += ["trainer/cpu.yaml", "logger/csv.yaml"]
    args = ["fit", *config_args(*configs)]
    args += [
        "--model.scenario.init_args.length", str(length),
        "--model.scenario.init_args.scale", str(scale),
        "--seed_everything", str(seed),
        "--run_dir", str(run_dir),
    ]  # fmt: skip
    if pretrain:
        args += ["--model.export.policy", str(policy)]
    else:
        args += ["--model.pretrained", str(policy), "--trainer.callbacks+=callbacks.LogisticActorTrace"]
    if budget is not None:
        args += ["--model.budget.frames", str(budget)]
    return args + list(extra)


def launch(args: list[str], log: Path, in_process: bool) -> None:
    """One ``lit-rl fit``: in this process (``lit_rl.cli.main``) or as a subprocess logging to ``log``."""
    if in_process:
        from lit_rl.cli import main

        main(args)
        return
    with log.open("w") as out:
        code = subprocess.run(
            [sys.executable, "-m", "lit_rl.cli", *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    if code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-5:])
        raise RuntimeError(f"lit-rl fit failed with exit code {code} (log: {log}):\n{tail}")


def ensure_run(run_dir: Path, args: list[str], in_process: bool, product: Path | None = None) -> str:
    """Run ``lit-rl fit args`` into ``run_dir`` unless it finished (and left ``product``);
    continue it from its last checkpoint if it was interrupted."""
    state = run_state(run_dir)
    if state == "done" and product is not None and not product.is_file():
        state = "fresh"  # π* file lost: make it again
    if state == "done":
        return "skipped"
    if state == "fresh" and run_dir.exists():
        shutil.rmtree(run_dir)  # an attempt killed before its first checkpoint
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    if state == "resume":
        args = [*args, "--ckpt_path", "last"]
    launch(args, run_dir.parent / f"{run_dir.name}.log", in_process)
    return "resumed" if state == "resume" else "ran"


def pretrain(star: PiStar, root: Path, length: int, budget, extra, in_process: bool) -> str:
    policy = policy_path(root, star.scale, star.seed)
    run_dir = policy.parent / "pretrain"
    args = fit_args(length, star.scale, star.seed, run_dir, True, policy, budget, extra)
    return ensure_run(run_dir, args, in_process, product=policy)


def finetune(cell: Cell, root: Path, budget, extra, in_process: bool) -> str:
    run_dir = root / cell.name / "finetune"
    policy = policy_path(root, cell.scale, cell.seed)
    args = fit_args(cell.length, cell.scale, cell.seed, run_dir, False, policy, budget, extra)
    return ensure_run(run_dir, args, in_process)


def run_all(
    todo: list[Cell], root: Path, budget: int, pretrain_budget, pretrain_length: int, extra, jobs: int
):
    """Every π* first, then every fine-tuning, ``jobs`` runs at a time (1: in this process)."""
    in_process = jobs == 1
    pretrain_args = (root, pretrain_length, pretrain_budget, extra, in_process)
    stages = [
        [(f"π* {star.name}", pretrain, (star, *pretrain_args)) for star in pi_stars(todo)],
        [(f"fine-tuning {c.name}", finetune, (c, root, budget, extra, in_process)) for c in todo],
    ]

    def timed(name, function, args):
        start = time.monotonic()
        return name, function(*args), time.monotonic() - start

    def report(results) -> None:
        for name, what, seconds in results:
            print(f"apple-figures: {name}: {what} ({seconds:.0f} s)", flush=True)

    if in_process:  # Lightning installs signal handlers, which only the main thread may do
        for stage in stages:
            report(timed(*job) for job in stage)
        return
    with ThreadPoolExecutor(jobs) as pool:
        for stage in stages:
            report(pool.map(lambda job: timed(*job), stage))


# --- reading and drawing ----------------------------------------------------------------------
@dataclass
class CellResult:
    """One fine-tuning run's curves, read from its ``summary.json`` and actor trace."""

    cell: Cell
    frames: np.ndarray
    far: np.ndarray
    close: np.ndarray
    far_success: np.ndarray
    close_success: np.ndarray
    trace_frames: np.ndarray
    ratio: np.ndarray  # |b| / |w|


def load_result(cell: Cell, root: Path) -> CellResult:
    run_dir = root / cell.name / "finetune"
    history = json.loads((run_dir / "summary.json").read_text())["eval_history"]
    trace = json.loads((run_dir / TRACE_FILE).read_text())

    def series(subspace: str, key: str) -> np.ndarray:
        return np.array([entry[subspace][key] for entry in history], dtype=float)

    w, b = np.abs(np.array(trace["w"])), np.abs(np.array(trace["b"]))
    return CellResult(
        cell=cell,
        frames=np.array([entry["env_steps"] for entry in history], dtype=float),
        far=series("far", "return_mean"),
        close=series("close", "return_mean"),
        far_success=series("far", "success_rate"),
        close_success=series("close", "success_rate"),
        trace_frames=np.array(trace["env_steps"], dtype=float),
        ratio=b / np.maximum(w, 1e-12),
    )


def band(results: list[CellResult], x: str, y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over seeds of ``y`` against ``x``, on the shortest run's x values."""
    xs = min((getattr(r, x) for r in results), key=lambda v: v[-1])
    ys = np.array([np.interp(xs, getattr(r, x), getattr(r, y)) for r in results])
    return xs, ys.mean(0), ys.min(0), ys.max(0)


def cell_statistics(results: list[CellResult]) -> dict[str, tuple[float, float, float]]:
    """Per-seed figures of one (M, c), as (mean, min, max) over seeds; returns in units of M."""
    per_seed = {
        "far_start": [r.far[0] / r.cell.length for r in results],
        "far_min": [r.far.min() / r.cell.length for r in results],
        "far_mean": [r.far.mean() / r.cell.length for r in results],
        "far_final": [r.far[-1] / r.cell.length for r in results],
        "forgetting": [(r.far[0] - r.far.min()) / r.cell.length for r in results],
        "close_final": [r.close[-1] / r.cell.length for r in results],
        "close_success_final": [r.close_success[-1] for r in results],
        "far_success_final": [r.far_success[-1] for r in results],
        "far_success_min": [r.far_success.min() for r in results],
        "ratio_start": [r.ratio[0] for r in results],
        "ratio_final": [r.ratio[-1] for r in results],
    }
    return {k: (float(np.mean(v)), float(np.min(v)), float(np.max(v))) for k, v in per_seed.items()}


def _errorbar(ax, xs, stats: list[tuple[float, float, float]], label: str, marker: str) -> None:
    mean = np.array([s[0] for s in stats])
    low, high = mean - np.array([s[1] for s in stats]), np.array([s[2] for s in stats]) - mean
    ax.errorbar(xs, mean, yerr=[low, high], marker=marker, capsize=3, label=label)


def draw(sweep: str, groups: dict[float, list[CellResult]], out: Path, budget_label: str) -> Path:
    """One figure for a sweep (``length`` or ``scale``): four panels, mean over seeds ± min–max."""
    values = sorted(groups)
    symbol = "M" if sweep == "length" else "c"
    fixed = groups[values[0]][0].cell
    title = (
        f"AppleRetrieval, vanilla fine-tuning, c = {fixed.scale:g}"
        if sweep == "length"
        else f"AppleRetrieval, vanilla fine-tuning, M = {fixed.length}"
    )
    seeds = sorted({r.cell.seed for results in groups.values() for r in results})
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    (a_far, a_success), (a_forget, a_ratio) = axes
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(values)))
    for value, color in zip(values, colors):
        results = groups[value]
        frames, mean, low, high = band(results, "frames", "far")
        norm = results[0].cell.length
        a_far.plot(frames, mean / norm, color=color, label=f"{symbol} = {value:g}")
        a_far.fill_between(frames, low / norm, high / norm, color=color, alpha=0.2)
        tf, tmean, tlow, thigh = band(results, "trace_frames", "ratio")
        a_ratio.plot(tf, tmean, color=color, label=f"{symbol} = {value:g}")
        a_ratio.fill_between(tf, tlow, thigh, color=color, alpha=0.2)
        if sweep == "scale":
            a_ratio.axhline(value, color=color, linestyle=":", linewidth=1)
    if sweep == "length":
        a_ratio.axhline(fixed.scale, color="black", linestyle=":", linewidth=1, label=f"c = {fixed.scale:g}")
    a_far.axhline(1.0, color="black", linestyle="--", linewidth=1, label="optimal (return M)")
    a_far.set(title="FAR return during fine-tuning", xlabel="environment frames", ylabel="FAR return / M")
    a_ratio.set(
        title="|b| / |w| of the actor (dotted: c, below it both phases fit)",
        xlabel="environment frames",
        ylabel="|b| / |w|",
        yscale="log",
    )
    stats = [cell_statistics(groups[v]) for v in values]
    _errorbar(a_success, values, [s["close_success_final"] for s in stats], "whole task (CLOSE start)", "o")
    _errorbar(a_success, values, [s["far_success_final"] for s in stats], "FAR (phase 2)", "s")
    a_success.set(title="final success rate", xlabel=symbol, ylabel="success rate", ylim=(-0.05, 1.05))
    _errorbar(a_forget, values, [s["forgetting"] for s in stats], "π*'s FAR − lowest FAR", "o")
    _errorbar(a_forget, values, [s["far_mean"] for s in stats], "mean FAR over the run", "s")
    a_forget.set(title="forgetting of FAR (returns / M)", xlabel=symbol, ylabel="return / M")
    for ax in (a_success, a_forget):
        if sweep == "scale":
            ax.set_xscale("log")
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.minorticks_off()
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}; {len(seeds)} seeds (mean, min–max), {budget_label}")
    fig.tight_layout()
    path = out / f"apple_fig{'10_length' if sweep == 'length' else '11_scale'}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table(sweep: str, groups: dict[float, list[CellResult]]) -> str:
    symbol = "M" if sweep == "length" else "c"
    keys = [
        "far_min", "far_mean", "far_final", "forgetting",
        "close_success_final", "far_success_final", "ratio_start", "ratio_final",
    ]  # fmt: skip
    lines = [f"| {symbol} | seeds | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for value in sorted(groups):
        stats = cell_statistics(groups[value])
        cells = [f"{stats[k][0]:.2f} [{stats[k][1]:.2f}, {stats[k][2]:.2f}]" for k in keys]
        lines.append(f"| {value:g} | {len(groups[value])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_figures(
    root: Path, out: Path, lengths, scales, seeds, default_scale, scale_length, budget
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    sweeps = {
        "length": {m: [load_result(Cell(m, default_scale, s), root) for s in seeds] for m in lengths},
        "scale": {c: [load_result(Cell(scale_length, c, s), root) for s in seeds] for c in scales},
    }
    label = f"{budget:,} frames per run".replace(",", " ")
    paths, sections = [], ["# AppleRetrieval forgetting figures (vanilla fine-tuning)", ""]
    for sweep, groups in sweeps.items():
        if not groups:
            continue
        path = draw(sweep, groups, out, label)
        paths.append(path)
        sections += [
            f"## {sweep} sweep ({label})",
            "",
            "mean [min, max] over seeds; returns divided by M; ratio = |b|/|w| of the actor",
            "",
            table(sweep, groups),
            "",
            f"![{sweep}]({path.name})",
            "",
        ]
    report = out / "apple_figures.md"
    report.write_text("\n".join(sections))
    return [*paths, report]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/apple-figures"))
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--lengths", type=int, nargs="*", default=list(LENGTHS))
    parser.add_argument("--scales", type=float, nargs="*", default=list(SCALES))
    parser.add_argument("--scale-length", type=int, default=SCALE_SWEEP_LENGTH, help="M of the scale sweep")
    parser.add_argument(
        "--pretrain-length", type=int, default=SCALE_SWEEP_LENGTH, help="corridor π* is pre-trained in"
    )
    parser.add_argument("--default-scale", type=float, default=DEFAULT_SCALE, help="c of the length sweep")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--budget", type=int, default=BUDGET, help="fine-tuning frames per run")
    parser.add_argument(
        "--pretrain-budget", type=int, default=None, help="π*'s frames (default: its preset's)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (1: in this process)")
    parser.add_argument("--plots-only", action="store_true", help="only redraw from existing runs")
    parser.add_argument("extra", nargs="*", help="further lit-rl overrides after --, for every run")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    todo = cells(args.lengths, args.scales, args.seeds, args.default_scale, args.scale_length)
    start = time.monotonic()
    if not args.plots_only:
        run_all(
            todo, args.runs, args.budget, args.pretrain_budget, args.pretrain_length, args.extra, args.jobs
        )
    written = write_figures(
        args.runs,
        args.out,
        args.lengths,
        args.scales,
        args.seeds,
        args.default_scale,
        args.scale_length,
        args.budget,
    )
    print(
        f"apple-figures: {len(todo)} runs in {time.monotonic() - start:.0f} s; wrote "
        + ", ".join(map(str, written))
    )


if __name__ == "__main__":
    main()
