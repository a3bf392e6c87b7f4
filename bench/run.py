"""Run every lit_rl benchmark side by side and write bench/results.json and bench/results.md.

Each section runs in its own subprocess (a crash or hang in one leaves the others' figures) and
measures its figure and that figure's baseline in the same run, on the same machine state, so the
ratios are the numbers to compare across machines. Targets are printed next to the ratios for the
reader; nothing here asserts on timings.

    python -m bench.run            # tens of minutes (``make bench``; it prints its expected duration)
    python -m bench.run --quick    # shorter timed slices, noisier
    python -m bench.run --smoke --out /tmp/bench   # tiny sizes: does every section still run?
    python -m bench.run --only apple,memory

The results go to ``--out`` (default ``bench/results``); overwriting a file git tracks is said on
the console, with how to review and restore it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: a representative part of the suite (processes, DDP, a module fixture, plain unit tests)
SUITE_SUBSET = [
    "tests/test_background_evaluation.py", "tests/test_ddp.py", "tests/test_cli.py",
    "tests/test_nethack_scenario.py", "tests/test_retention.py", "tests/test_resume.py",
    "tests/test_throughput.py", "tests/test_vtrace.py",
]  # fmt: skip
# Per-section settings: full run, --quick, then --smoke.
# --quick keeps every size (games, envs) so its ratios mean the same; only the timed seconds shrink.
# --smoke shrinks everything so every section runs in `make test` (tests/test_bench.py): its
# figures mean nothing, it checks that each section still runs against the current code.
SETTINGS = {
    "nethack": (
        {"seconds": 6.0, "num_games": 64},
        {"seconds": 1.5, "num_games": 64},
        {"seconds": 0.2, "num_games": 4},
    ),
    "montezuma": (
        {"seconds": 16.0, "rounds": 4, "num_envs": 16},
        {"seconds": 4.0, "rounds": 2, "num_envs": 16},
        {"seconds": 0.3, "rounds": 1, "num_envs": 2},
    ),
    "apple": ({"seconds": 3.0}, {"seconds": 1.0}, {"seconds": 0.1}),
    "finetune": (
        {"budget": 200_000, "pretrain_budget": 400_000, "ceiling_seconds": 3.0, "nethack_budget": 2048},
        {"budget": 200_000, "pretrain_budget": 100_000, "ceiling_seconds": 1.0, "nethack_budget": 0},
        {"budget": 12_800, "pretrain_budget": 6_400, "ceiling_seconds": 0.2, "nethack_budget": 0},
    ),
    "memory": (
        {"batches": 200, "small": 2, "factor": 10, "game_steps": 2000},
        {"batches": 20, "small": 2, "factor": 10, "game_steps": 2000},
        {"batches": 2, "small": 1, "factor": 2, "game_steps": 100},
    ),
    "training": (
        {"frames": 8192, "num_envs": 32},
        {"frames": 4096, "num_envs": 32},
        {
            "frames": 256,
            "num_envs": 4,
            "rollout": 32,
            "baseline": None,
            "only": ["old/none/sync", "new/none/sync", "new/ks/async"],
        },
    ),
    "evaluation": (
        {"apple_budget": 200_000, "nethack_budget": 4096},
        {"apple_budget": 100_000, "nethack_budget": 2048},
        {"apple_budget": 12_800, "nethack_budget": 256, "apple_pretrain_budget": 6_400},
    ),
    "montezuma_training": (
        {"frames": 3072, "num_envs": 8, "raw_seconds": 8.0},
        {"frames": 2048, "num_envs": 8, "raw_seconds": 3.0},
        {"frames": 768, "num_envs": 2, "raw_seconds": 0.2},  # 3 batches of 2 × 128
    ),
    "robotic": (
        {"seconds": 12.0, "rounds": 4, "num_envs": 8},
        {"seconds": 4.0, "rounds": 2, "num_envs": 8},
        {"seconds": 0.3, "rounds": 1, "num_envs": 2},
    ),
    "roofline": (
        {"frames": 8192, "num_envs": 16, "rollout": 32},
        {"frames": 4096, "num_envs": 16, "rollout": 32},
        {"frames": 256, "num_envs": 4, "rollout": 16},
    ),
    # opt-in (`--only suite`): the test suite (`make test`'s tests) both ways takes ≈ 2 × its duration
    "suite": (
        {"tests": ["tests"], "rounds": 1},
        {"tests": SUITE_SUBSET, "rounds": 1},
        {"tests": ["tests/test_vtrace.py", "tests/test_apple_env.py"], "rounds": 1},
    ),
}
TIERS = ("full", "quick", "smoke")
#: sections a plain `make bench` leaves out (run them with --only)
OPT_IN = ("suite",)
TIMEOUT_S = {
    "nethack": 240,
    "montezuma": 300,
    "apple": 120,
    "finetune": 400,
    "memory": 600,
    "robotic": 480,
    "training": 1500,
    "evaluation": 1500,
    "montezuma_training": 900,
    "roofline": 900,
    "suite": 3600,
}


def section(name: str, settings: dict) -> dict:
    """Runs in the section's subprocess."""
    if name == "nethack":
        from bench import nethack_collection

        return nethack_collection.run(settings["seconds"], settings["num_games"], workers=2)
    if name == "montezuma":
        from bench import montezuma_collection

        return montezuma_collection.run(settings["seconds"], settings["rounds"], settings["num_envs"])
    if name == "apple":
        from bench import apple_collection

        return apple_collection.run(settings["seconds"], num_envs=4096)
    if name == "finetune":
        from bench import finetune_throughput

        return finetune_throughput.run(**settings)
    if name == "training":
        from bench import nethack_training

        return nethack_training.compare(**settings)
    if name == "evaluation":
        from bench import finetune_throughput

        return finetune_throughput.evaluation_overlap(**settings)
    if name == "montezuma_training":
        from bench import montezuma_training

        return montezuma_training.run(**settings)
    if name == "memory":
        from bench import bc_memory

        return bc_memory.run(**settings)
    if name == "roofline":
        from bench import roofline

        return roofline.run(**settings)
    if name == "suite":
        from bench import suite

        return suite.run(**settings)
    if name == "robotic":
        from bench import robotic_env

        return robotic_env.run(settings["seconds"], settings["rounds"], settings["num_envs"])
    raise ValueError(f"unknown section {name!r}")


def run_section(name: str, settings: dict, log_dir: Path) -> dict:
    """Run one section in a subprocess; its stderr goes to ``log_dir/<name>.log``."""
    out = log_dir / f"{name}.json"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    command = [sys.executable, "-m", "bench.run", "--section", name, json.dumps(settings), str(out)]
    with open(log_dir / f"{name}.log", "w") as log:
        try:
            proc = subprocess.run(
                command, cwd=ROOT, stdout=log, stderr=log, timeout=TIMEOUT_S[name], check=False
            )
            error = None if proc.returncode == 0 else f"exit code {proc.returncode}"
        except subprocess.TimeoutExpired:
            error = f"timed out after {TIMEOUT_S[name]} s"
    elapsed = time.perf_counter() - start
    if error is None and out.exists():
        result = json.loads(out.read_text())
        return {"ok": True, "seconds": elapsed, "settings": settings, "result": result}
    log = log_dir / f"{name}.log"
    return {"ok": False, "seconds": elapsed, "settings": settings, "error": f"{error}; see {log}"}


# --- machine ----------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict:
    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        **{p: _version(p) for p in ("torch", "torchrl", "tensordict", "lightning", "nle", "ale-py")},
    }


# --- table -----------------------------------------------------------------------------------------
def _row(figure, value, unit, baseline=None, baseline_label="", target=None, ratio=None, met=None):
    if ratio is None and baseline:
        ratio = value / baseline
    return {
        "figure": figure, "value": value, "unit": unit, "baseline": baseline,
        "baseline_label": baseline_label, "ratio": ratio, "target": target, "met": met,
    }  # fmt: skip


def rows(results: dict) -> list[dict]:
    """The table: one row per figure, each with its same-run baseline and the ratio."""
    out = []
    nh = results.get("nethack", {}).get("result")
    if nh:
        games = results["nethack"]["settings"]["num_games"]
        for label, key in (("1 process", "batch_env_collector"), ("2 workers", "batch_env_2_workers")):
            value = nh[key]
            ratio = value / nh["raw_nle"]
            out.append(_row(f"NetHack NetHackBatchEnv + Collector, {label} ({games} games/process)",
                            value, "steps/s", nh["raw_nle"], "raw NLE gym loop", "≥ 0.5×",
                            ratio, ratio >= 0.5))  # fmt: skip
            ratio = value / nh["torchrl_gym_env"]
            out.append(_row(f"NetHack NetHackBatchEnv + Collector, {label}", value, "steps/s",
                            nh["torchrl_gym_env"], "TorchRL GymEnv + Collector", "≥ 10×",
                            ratio, ratio >= 10))  # fmt: skip
    mz = results.get("montezuma", {}).get("result")
    if mz:
        labels = list(mz)
        raw_label = labels[0]
        envs = results["montezuma"]["settings"]["num_envs"]
        for label in labels[1:]:
            ratio = mz[label] / mz[raw_label]
            out.append(_row(f"Montezuma {label} ({envs} envs)", mz[label], "agent steps/s",
                            mz[raw_label], "ale-py AtariVectorEnv raw", "≥ 0.7×", ratio,
                            ratio >= 0.7))  # fmt: skip
    ap = results.get("apple", {}).get("result")
    if ap:
        n = ap["num_envs"]
        for label, key in (("AppleRetrievalEnv step_and_maybe_reset", "torchrl_env"),
                           ("AppleRetrievalEnv + Collector", "collector")):  # fmt: skip
            value = ap[key]
            out.append(_row(f"Apple {label} ({n} envs)", value, "corridor steps/s",
                            ap["numpy_loop"], "numpy apple_step loop, same batch",
                            "≥ 1,000,000 steps/s", None, value >= 1e6))  # fmt: skip
        out.append(_row(f"Apple AppleRetrievalEnv step_and_maybe_reset ({n} envs)",
                        ap["torchrl_env"], "corridor steps/s", ap["gym_single"],
                        "gymnasium AppleRetrieval-v0, 1 env"))  # fmt: skip
        out.append(_row(f"Apple AppleRetrievalEnv._step/_reset only ({n} envs)",
                        ap["torchrl_dynamics"], "corridor steps/s", ap["numpy_loop"],
                        "numpy apple_step loop, same batch"))  # fmt: skip
    ft = results.get("finetune", {}).get("result")
    if ft:
        a = ft["apple_ewc"]
        out.append(_row("Fine-tune Apple EWC (lit-rl fit, cpu preset) env frames/s", a["env_frames_per_s"],
                        "frames/s", a["collection_ceiling_frames_per_s"],
                        "Collector + actor alone, same envs"))  # fmt: skip
        out.append(_row("Fine-tune Apple EWC frames/s excl. evaluation + setup",
                        a["env_frames_per_s_excl_eval_setup"], "frames/s",
                        a["collection_ceiling_frames_per_s"],
                        "Collector + actor alone, same envs"))  # fmt: skip
        out.append(_row("Fine-tune Apple EWC updates/s", a["updates_per_s"], "updates/s"))
        nk = ft["nethack_ks"]
        if nk.get("status") == "done":
            out.append(
                _row(
                    "Fine-tune NetHack KS (nethack preset, cpu trainer) env frames/s",
                    nk["env_frames_per_s"],
                    "frames/s",
                )
            )
            out.append(
                _row(
                    "Fine-tune NetHack KS frames/s excl. evaluation + setup",
                    nk["env_frames_per_s_excl_eval_setup"],
                    "frames/s",
                )
            )
            out.append(_row("Fine-tune NetHack KS updates/s", nk["updates_per_s"], "updates/s"))
    tr = results.get("training", {}).get("result")
    if tr:
        out += training_rows(tr)
    ev = results.get("evaluation", {}).get("result")
    if ev:
        out += evaluation_rows(ev)
    mt = results.get("montezuma_training", {}).get("result")
    if mt:
        for label, run in mt["runs"].items():
            passes = run.get("trunk_passes_per_frame")
            extra = "" if passes is None else f", {passes:.2f} trunk passes/frame"
            out.append(_row(f"Montezuma PPO+RND training, {label} ({mt['num_envs']} envs{extra})",
                            run["frames_per_s"], "frames/s", mt["raw_steps_per_s"],
                            "ale-py AtariVectorEnv raw, same run"))  # fmt: skip
    mem = results.get("memory", {}).get("result")
    if mem:
        small, large = mem["small"], mem["large"]
        ratio = large["peak_rss_kb"] / small["peak_rss_kb"]
        out.append(_row(f"BC replay NLDSequences peak RSS, {large['games']} games "
                        f"({mem['batches']} batches of {mem['batch_size']}×{mem['seq_length']})",
                        large["peak_rss_kb"] / 1024, "MiB", small["peak_rss_kb"] / 1024,
                        f"same, {small['games']} games", "≈ 1× (≤ 1.1×)", ratio,
                        ratio <= 1.1))  # fmt: skip
        cost = mem["streaming_cost_kb"]
        if cost["small"] > 0:
            ratio = cost["large"] / cost["small"]
            out.append(_row(f"BC replay streaming cost (peak − idle), {large['games']} games",
                            cost["large"] / 1024, "MiB", cost["small"] / 1024,
                            f"same, {small['games']} games", "≈ 1× (≤ 1.1×)", ratio,
                            ratio <= 1.1))  # fmt: skip
    rl = results.get("roofline", {}).get("result")
    if rl:
        out += roofline_rows(rl)
    su = results.get("suite", {}).get("result")
    if su:
        out.append(_row(f"test suite wall time, `make test`'s {len(su['tests'])} path(s) on 2 xdist workers",
                        su["seconds"]["xdist"], "s", su["seconds"]["one_process"], "one process, same run",
                        "≥ 1.3× faster", su["speedup"], su["speedup"] >= 1.3))  # fmt: skip
    rs = results.get("robotic", {}).get("result")
    if rs:
        rates, raw = rs["rates"], next(iter(rs["rates"]))
        for label, value in list(rates.items())[1:]:
            single = "worker" not in label
            ratio = value / rates[raw]
            out.append(_row(f"RoboticSequence {label} ({rs['num_envs']} sequences)", value, "steps/s",
                            rates[raw], "raw Meta-World loop, 1 process", "≥ 0.8×" if single else None,
                            ratio, ratio >= 0.8 if single else None))  # fmt: skip
        per_cpu = rs["steps_per_cpu_s"]  # all of a row's processes: load hardly moves it
        for label, value in list(per_cpu.items())[1:]:
            out.append(_row(f"RoboticSequence {label}, per CPU-second", value, "steps/CPU-s",
                            per_cpu[raw], "raw Meta-World loop"))  # fmt: skip
    return out


def training_rows(tr: dict) -> list[dict]:
    """NetHack training frames/s (issue 14): each configuration against the old synchronous
    trainer with the same method, KS against none, and collection alone."""
    runs, out = tr["runs"], []
    rate = {name: run.get("frames_per_s") for name, run in runs.items()}
    ceiling = runs.get("new/none/sync", {}).get("collection_only_frames_per_s")
    for method in ("none", "ks"):
        old = rate.get(f"old/{method}/sync")
        for collection in ("sync", "async"):
            new = rate.get(f"new/{method}/{collection}")
            if new and old:
                ratio = new / old
                out.append(_row(f"NetHack training {method}, {collection} (tiny ScaledNet, "
                                f"{tr['num_envs']} envs)", new, "frames/s", old,
                                f"trainer at {tr['old_commit']}, same run",
                                "≥ 1.3×" if method == "none" else None, ratio,
                                ratio >= 1.3 if method == "none" else None))  # fmt: skip
    for collection in ("sync", "async"):
        none, ks = rate.get(f"new/none/{collection}"), rate.get(f"new/ks/{collection}")
        if none and ks:
            ratio = ks / none
            out.append(_row(f"NetHack training KS vs none, {collection}", ks, "frames/s", none,
                            "none, same run", "≥ 0.85×", ratio, ratio >= 0.85))  # fmt: skip
    vtrace, gae = rate.get("new/none/async/vtrace"), rate.get("new/none/async")
    if vtrace and gae:
        out.append(_row("NetHack training none, async, V-trace targets vs GAE", vtrace, "frames/s", gae,
                        "async GAE, same run", None, vtrace / gae))  # fmt: skip
    if ceiling:
        for collection in ("sync", "async"):
            new = rate.get(f"new/none/{collection}")
            if new:
                out.append(_row(f"NetHack training none, {collection}, against collection alone",
                                new, "frames/s", ceiling, "Collector + policy, no learning"))  # fmt: skip
    return out


def roofline_rows(rl: dict) -> list[dict]:
    """FLOPs per frame, the machine's speed for those shapes, and the share the trainer uses."""
    flops = rl["flops_per_frame"]
    machine = rl["machine_flops_per_s"]
    return [
        _row(f"tiny ScaledNet FLOPs per training frame (collection {flops['collection'] / 1e6:.2f} M, "
             f"learner {flops['learner'] / 1e6:.2f} M)", flops["total"], "FLOP"),
        _row("matrix products + convolutions of those shapes, this machine, 1 thread: collection",
             machine["collection"] / 1e9, "GFLOP/s"),
        _row("… learner (forward, backward)", machine["learner"] / 1e9, "GFLOP/s"),
        _row(f"NetHack trainer, sync, 1 thread ({rl['num_envs']} envs) against its FLOPs at that speed",
             rl["trainer_frames_per_s"], "frames/s", rl["limit_frames_per_s"],
             "the FLOP limit of one core, same run", None, rl["share_of_one_core"]),
    ]  # fmt: skip


def evaluation_rows(ev: dict) -> list[dict]:
    """Run wall time with evaluation in the background against in the training process (issue 14.3)."""
    out, runs = [], ev["runs"]
    for name in ("apple", "nethack"):
        fg, bg = runs.get(f"{name}/foreground"), runs.get(f"{name}/background")
        if fg and bg:
            same = "same evaluations" if bg.get("same_history") else "**evaluations differ**"
            load = f"load {fg['load_average_before']:.1f} / {bg['load_average_before']:.1f}"
            out.append(_row(f"{name} fit with evaluation in the background, whole process ({bg['frames']:,} "
                            f"frames, {bg['evaluations']} evaluations; {same}; {load})", bg["process_s"], "s",
                            fg["process_s"], "evaluation in the training process, same run"))  # fmt: skip
    return out


def training_split(tr: dict) -> list[str]:
    """Per-configuration time split, passes per frame and policy lag (markdown lines)."""
    lines = ["", f"## NetHack training, {tr['frames']:,} frames per run (tiny ScaledNet, encoders frozen)",
             "", "| run | frames/s | learning s | env s | inference s | waiting s | passes/frame "
             "| encoder/frame | policy lag (mean, max) | load before |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]  # fmt: skip
    for name, run in tr["runs"].items():
        if "error" in run:
            lines.append(f"| {name} | failed | | | | | | | | |")
            continue
        split, lag = run["split_s"], run.get("policy_lag")
        passes = run.get("passes_per_frame")
        passes_text = "—" if passes is None else f"{passes:.2f}"
        encoder_text = "—" if passes is None else f"{run['encoder_per_frame']:.2f}"
        lag_text = "—" if lag is None else f"{lag['mean']:.2f}, {lag['max']:.2f}"
        lines.append(
            f"| {name} | {run['frames_per_s']:,.0f} | {split['learning']:.1f} | {split['env']:.1f} "
            f"| {split['inference']:.1f} | {split['waiting']:.1f} | {passes_text} | {encoder_text} "
            f"| {lag_text} | {run['load_average_before']:.1f} |"
        )
    lines += ["", "Learner-process time: learning = training_step; env / inference = env steps and "
              "the collection policy in this process (0 when a collector process does them); "
              "waiting = the rest of fetching a batch. Passes are counted in the learner process "
              "(async: the collection pass runs in the collector process and is not counted; "
              "add 1)."]  # fmt: skip
    return lines


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit == "MiB":
        return f"{value:,.1f} MiB"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}".strip()
    return f"{value:,.2f} {unit}".strip()


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# lit_rl benchmarks",
        "",
        f"- date (UTC): {m['date_utc']}; mode: {report['mode']}; total {report['total_s']:.0f} s",
        f"- machine: {m['nproc']} CPUs (nproc; {m['usable_cpus']} usable), {m['cpu_model']}",
        f"- load average at start: {', '.join(map(str, m['load_average_start']))}; "
        f"at end: {', '.join(map(str, report['load_average_end']))}",
        f"- python {m['python']}, torch {m['torch']}, torchrl {m['torchrl']}, tensordict "
        f"{m['tensordict']}, lightning {m['lightning']}, nle {m['nle']}, ale-py {m['ale-py']}",
        "",
        "Every baseline is measured in the same run. Targets are for reading, not assertions; on a "
        "shared, loaded machine ratios are more trustworthy than absolute rates.",
        "",
        "| Figure | Measured | Baseline (same run) | Ratio | Target | Met |",
        "|---|---:|---:|---:|---|:-:|",
    ]
    for r in report["rows"]:
        baseline = f"{_fmt(r['baseline'], r['unit'])} ({r['baseline_label']})" if r["baseline"] else "—"
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else "—"
        met = "—" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(f"| {r['figure']} | {_fmt(r['value'], r['unit'])} | {baseline} | {ratio} | "
                     f"{r['target'] or '—'} | {met} |")  # fmt: skip
    ft = report["sections"].get("finetune", {}).get("result")
    if ft:
        runs = {"Apple EWC": ft["apple_ewc"]}
        if ft["nethack_ks"].get("status") == "done":
            runs["NetHack KS"] = ft["nethack_ks"]
        for label, a in runs.items():
            lines += [
                "",
                f"## Fine-tuning time split ({label}, {a['frames']:,} frames, {a['updates']} "
                f"updates, Trainer.fit {a['fit_s']:.1f} s)",
                "",
                "| Phase | Seconds | Share |",
                "|---|---:|---:|",
            ]
            for phase, seconds in a["split_s"].items():
                lines.append(f"| {phase} | {seconds:.2f} | {a['split_share'][phase]:.0%} |")
            logged = a.get("logged_env_frames_per_s_last")
            if logged is not None:
                lines += ["", f"`time/env_frames_per_s` logged by callbacks.throughput.Throughput "
                              f"on the last batch: {logged:,.0f}"]  # fmt: skip
        nk = ft["nethack_ks"]
        if nk.get("status") != "done":
            lines += ["", f"NetHack KS fine-tuning: **{nk.get('status')}** ({nk.get('reason')})."]
        lines += [
            "",
            "Phases: env = EnvBase.step_and_maybe_reset/reset inside Collector.rollout; "
            "inference = the collector's policy forward; collector = the rest of rollout; "
            "learning = training_step; evaluation = SubspaceEvaluation; setup = on_fit_start "
            "(EWC Fisher / teacher states); other = Lightning loop, logging, checkpoints.",
        ]
    tr = report["sections"].get("training", {}).get("result")
    if tr:
        lines += training_split(tr)
    failed = {k: v for k, v in report["sections"].items() if not v["ok"]}
    if failed:
        lines += ["", "## Sections that did not finish", ""]
        lines += [f"- {name}: {v['error']}" for name, v in failed.items()]
    lines += ["", "Section wall times: " + ", ".join(
        f"{k} {v['seconds']:.0f} s" for k, v in report["sections"].items())]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tier = parser.add_mutually_exclusive_group()
    tier.add_argument("--quick", action="store_true", help="short timed slices, same sizes")
    tier.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every section runs")
    parser.add_argument("--only", default="", help="comma-separated sections: " + ",".join(SETTINGS))
    parser.add_argument("--out", default=str(HERE / "results"), help="path stem for .json and .md")
    parser.add_argument("--section", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.section:  # inside a section's subprocess
        name, settings, out = args.section
        result = section(name, json.loads(settings))
        Path(out).write_text(json.dumps(result, default=str))
        return

    names = [n for n in args.only.split(",") if n] or [n for n in SETTINGS if n not in OPT_IN]
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        parser.error(f"unknown sections {unknown}: choose from {list(SETTINGS)}")
    out = Path(args.out)
    log_dir = HERE / ".cache" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    print(f"[bench] {expected_duration(names, mode, out)}", flush=True)
    report = {"mode": mode, "machine": machine(), "sections": {}}
    start = time.perf_counter()
    for name in names:
        settings = SETTINGS[name][TIERS.index(mode)]
        print(f"[bench] {name} {settings} …", flush=True)
        report["sections"][name] = outcome = run_section(name, settings, log_dir)
        status = "ok" if outcome["ok"] else f"FAILED: {outcome['error']}"
        print(f"[bench] {name}: {status} ({outcome['seconds']:.0f} s)", flush=True)
    report["total_s"] = time.perf_counter() - start
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report["rows"] = rows({k: v for k, v in report["sections"].items() if v["ok"]})
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    text = markdown(report)
    tracked = [path for path in (out.with_suffix(".json"), out.with_suffix(".md")) if git_tracked(path)]
    out.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    for path in tracked:
        print(f"[bench] overwrote {path}, which git tracks: review with `git diff {path}`, "
              f"restore with `git checkout {path}`")  # fmt: skip


def expected_duration(names: list[str], mode: str, out: Path) -> str:
    """What the run will take: the same sections of the last report at ``out`` in this mode, else
    the sections' time limits (an upper bound)."""
    try:
        last = json.loads(out.with_suffix(".json").read_text())
    except (OSError, ValueError):
        last = {}
    sections = last.get("sections", {}) if last.get("mode") == mode else {}
    if all(name in sections for name in names):
        seconds = sum(sections[name]["seconds"] for name in names)
        load = last.get("machine", {}).get("load_average_start", ["?"])[0]
        return f"expected ≈ {seconds / 60:.0f} min ({mode}; the last such run here, load {load})"
    limit = sum(TIMEOUT_S[name] for name in names)
    return f"{mode} run of {len(names)} sections: at most {limit / 60:.0f} min (their time limits)"


def git_tracked(path: Path) -> bool:
    """Whether git tracks ``path`` (False outside a repository)."""
    done = subprocess.run(["git", "ls-files", "--error-unmatch", str(path)], cwd=ROOT,
                          capture_output=True, check=False)  # fmt: skip
    return done.returncode == 0


if __name__ == "__main__":
    main()
