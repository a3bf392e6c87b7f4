"""End-to-end fine-tuning throughput through the real `lit-rl fit` CLI, run in-process.

AppleRetrieval + EWC on the CPU trainer preset: first a short pre-training exports π*, then the
timed fine-tuning run starts from it. Timing wrappers are installed at runtime around the library's
methods (nothing in the library is edited) and split the `Trainer.fit` wall time into:

- env: ``EnvBase.step_and_maybe_reset`` / ``reset`` called by the collector,
- inference: the collector's policy forward,
- collector: the rest of ``Collector.rollout`` (TensorDict bookkeeping, trajectory storage),
- learning: ``PPOFineTuning.training_step`` (GAE, PPO + EWC losses, backward, optimiser steps),
- evaluation: ``SubspaceEvaluation._evaluate`` (CLOSE/FAR evaluation episodes),
- setup: ``PPOFineTuning.on_fit_start`` (EWC's Fisher from π*'s rollout states),
- other: whatever remains (Lightning's loop, logging, checkpoints).

The baseline is the collection ceiling of the same setup: the same env count and rollout length
under a ``Collector`` with the pre-trained actor and no learning.

    python -m bench.finetune_throughput --budget 200000
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from lightning import Trainer
from torchrl.collectors import Collector
from torchrl.envs import EnvBase

from callbacks.subspace_evaluation import SubspaceEvaluation
from lit_rl.cli import main as cli_main
from lit_rl.training.ppo import PPOFineTuning

ROOT = Path(__file__).resolve().parents[1]
TRAINER = ["--config", "configs/trainer/cpu.yaml", "--config", "configs/logger/csv.yaml"]
THROUGHPUT_CALLBACK = "--trainer.callbacks+=callbacks.throughput.Throughput"


class PhaseTimer:
    """Accumulates wall time per phase; nested calls of one phase count once (outermost)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.active: dict[str, int] = defaultdict(int)
        self._patched: list = []

    def wrap(self, owner, name: str, phase: str, only_during: str | None = None) -> None:
        """Replace ``owner.name`` with a timed version; restored by ``restore``."""
        original = getattr(owner, name)
        timer = self

        def timed(*args, **kwargs):
            counting = (only_during is None or timer.active[only_during]) and not timer.active[phase]
            if not counting:
                return original(*args, **kwargs)
            timer.active[phase] += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timer.seconds[phase] += time.perf_counter() - start
                timer.calls[phase] += 1
                timer.active[phase] -= 1

        self._patched.append((owner, name, owner.__dict__.get(name, _MISSING)))
        setattr(owner, name, timed)

    def restore(self) -> None:
        for owner, name, original in reversed(self._patched):
            if original is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        self._patched.clear()


_MISSING = object()


@contextlib.contextmanager
def timed_library(timer: PhaseTimer):
    """Install the timing wrappers for one fit; each new collector's policy is wrapped per instance."""
    timer.wrap(Trainer, "fit", "fit")
    timer.wrap(Collector, "rollout", "collect")
    timer.wrap(EnvBase, "step_and_maybe_reset", "env", only_during="collect")
    timer.wrap(EnvBase, "reset", "env", only_during="collect")
    timer.wrap(PPOFineTuning, "training_step", "learning")
    timer.wrap(PPOFineTuning, "on_fit_start", "setup")
    timer.wrap(SubspaceEvaluation, "_evaluate", "evaluation")
    original_init = Collector.__init__

    def init(collector, *args, **kwargs):
        original_init(collector, *args, **kwargs)
        if getattr(collector, "policy", None) is not None:
            timer.wrap(collector.policy, "forward", "inference", only_during="collect")

    Collector.__init__ = init
    try:
        yield timer
    finally:
        Collector.__init__ = original_init
        timer.restore()


def _cli(args: list[str], log: Path) -> float:
    """``lit-rl`` in-process with its chatter (progress bar, Lightning info) sent to ``log``."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    with open(log, "a") as sink, contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
        try:
            cli_main(args)
        except SystemExit as exit_:
            if exit_.code:
                raise RuntimeError(f"lit-rl {' '.join(args)} failed; see {log}") from None
    return time.perf_counter() - start


def pretrain_apple(workdir: Path, budget: int, log: Path) -> Path:
    policy = workdir / "apple-pretrained.pt"
    # fmt: off
    _cli([
        "fit", "--config", "configs/base.yaml", "--config", "configs/env/apple.yaml",
        "--config", "configs/pretrain/apple.yaml", *TRAINER,
        "--model.export.policy", str(policy), "--model.budget.frames", str(budget),
        "--run_dir", str(workdir / "pretrain"),
    ], log)
    # fmt: on
    return policy


def collection_ceiling(policy: Path, seconds: float, num_envs: int = 64, rollout: int = 100) -> float:
    """Frames/s of the fine-tuning collector alone: same envs, same actor, no learning."""
    from lit_rl.models.policy_io import load_policy
    from lit_rl.scenarios import AppleRetrieval

    torch.set_num_threads(1)
    scenario = AppleRetrieval(length=30, scale=0.1, policy="logistic")
    modules = scenario.make_policy().modules()
    load_policy(str(policy), modules, scenario.describe())
    env = scenario.make_env(num_envs, "close", 0)
    collector = Collector(
        env, modules["actor"], frames_per_batch=num_envs * rollout, total_frames=-1,
        auto_register_policy_transforms=False,
    )  # fmt: skip
    batches = iter(collector)
    try:
        next(batches)
        frames, start = 0, time.perf_counter()
        with torch.no_grad():
            while time.perf_counter() - start < seconds:
                frames += next(batches).numel()
        return frames / (time.perf_counter() - start)
    finally:
        collector.shutdown()


def _last_logged(metrics_csv: Path, key: str) -> float | None:
    if not metrics_csv.exists():
        return None
    with open(metrics_csv) as f:
        values = [row[key] for row in csv.DictReader(f) if row.get(key)]
    return float(values[-1]) if values else None


def finetune(args: list[str], run_dir: Path, log: Path) -> dict:
    """One timed ``lit-rl fit``: frames, updates and the wall-time split."""
    timer = PhaseTimer()
    updates = {}
    original_step = PPOFineTuning.training_step

    def counting_step(module, batch, batch_idx):
        original_step(module, batch, batch_idx)
        updates["frames"] = int(module.env_frames)
        updates["updates"] = module.trainer.global_step

    PPOFineTuning.training_step = counting_step
    try:
        with timed_library(timer):
            total = _cli([*args, "--run_dir", str(run_dir), THROUGHPUT_CALLBACK], log)
    finally:
        PPOFineTuning.training_step = original_step
    s = timer.seconds
    fit = s["fit"]
    split = {
        "env": s["env"],
        "inference": s["inference"],
        "collector": s["collect"] - s["env"] - s["inference"],
        "learning": s["learning"],
        "evaluation": s["evaluation"],
        "setup": s["setup"],
    }
    split["other"] = fit - sum(split.values())
    frames, steps = updates.get("frames", 0), updates.get("updates", 0)
    return {
        "frames": frames,
        "updates": steps,
        "wall_s": total,
        "fit_s": fit,
        "env_frames_per_s": frames / fit,
        "updates_per_s": steps / fit,
        "env_frames_per_s_excl_eval_setup": frames / (fit - s["evaluation"] - s["setup"]),
        "logged_env_frames_per_s_last": _last_logged(run_dir / "metrics.csv", "time/env_frames_per_s"),
        "split_s": split,
        "split_share": {k: v / fit for k, v in split.items()},
    }


def run(budget: int = 200_000, pretrain_budget: int = 400_000, ceiling_seconds: float = 3.0,
        nethack_budget: int = 2048, workdir: str | Path | None = None) -> dict:  # fmt: skip
    """Pre-train π*, fine-tune with EWC for ``budget`` frames, and time the collection ceiling;
    then NetHack KS for ``nethack_budget`` frames when its preset and data exist (0: skip)."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-finetune-"))
        workdir = Path(workdir)
        log = workdir / "cli.log"
        pretrain_start = time.perf_counter()
        policy = pretrain_apple(workdir, pretrain_budget, log)
        pretrain_s = time.perf_counter() - pretrain_start
        # fmt: off
        apple = finetune([
            "fit", "--config", "configs/base.yaml", "--config", "configs/env/apple.yaml",
            "--config", "configs/method/ewc.yaml", *TRAINER,
            "--model.pretrained", str(policy), "--model.budget.frames", str(budget),
        ], workdir / "finetune-apple-ewc", log)
        # fmt: on
        apple["pretrain_s"] = pretrain_s
        apple["collection_ceiling_frames_per_s"] = collection_ceiling(policy, ceiling_seconds)
        apple["over_ceiling"] = apple["env_frames_per_s"] / apple["collection_ceiling_frames_per_s"]
        result = {"apple_ewc": apple, "nethack_ks": nethack_status()}
        if result["nethack_ks"]["status"] == "ready" and nethack_budget <= 0:
            result["nethack_ks"] = {"status": "skipped", "reason": "not run in --quick mode"}
        elif result["nethack_ks"]["status"] == "ready":
            try:
                result["nethack_ks"] = nethack_ks(workdir, log, budget=nethack_budget)
            except Exception as error:  # the Apple figures stand on their own
                result["nethack_ks"] = {"status": "failed", "reason": repr(error)}
        return result


def nethack_status() -> dict:
    """The NetHack KS row runs once the env preset, the BC pre-training and recorded data exist."""
    needed = {
        "configs/env/nethack.yaml": "the NetHack env preset",
        "configs/pretrain/nethack.yaml": "the BC pre-training preset",
        "lit_rl/pretraining/behavioural_cloning.py": "BC pre-training",
        "data/nethack/index.db": "recorded games and FAR start states (`make data ENV=nethack`)",
    }
    missing = [f"{path} ({what})" for path, what in needed.items() if not (ROOT / path).exists()]
    if missing:
        return {"status": "pending", "reason": "missing " + "; ".join(missing)}
    return {"status": "ready"}


def pretrain_nethack(workdir: Path, bc_steps: int, log: Path) -> Path:
    """A few BC steps on data/nethack, exported to ``workdir``: enough to time fine-tuning."""
    from lit_rl.pretraining.behavioural_cloning import main as bc_main

    policy = workdir / "nethack-pretrained.pt"
    torch.set_num_threads(1)
    # fmt: off
    args = [
        "fit", "--config", "configs/pretrain/nethack.yaml", "--model.export.policy", str(policy),
        "--model.refresh_index", "false", "--trainer.max_steps", str(bc_steps),
        "--run_dir", str(workdir / "pretrain-nethack"),
    ]
    # fmt: on
    with open(log, "a") as sink, contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
        bc_main(args)
    if not policy.exists():
        raise RuntimeError(f"BC pre-training wrote no policy; see {log}")
    return policy


def nethack_ks(workdir: Path, log: Path, bc_steps: int = 5, budget: int = 2048) -> dict:
    """The NetHack CPU preset with kickstarting, from a briefly BC-pre-trained π*."""
    start = time.perf_counter()
    policy = pretrain_nethack(workdir, bc_steps, log)
    pretrain_s = time.perf_counter() - start
    # fmt: off
    result = finetune([
        "fit", "--config", "configs/base.yaml", "--config", "configs/env/nethack.yaml",
        "--config", "configs/method/ks.yaml", *TRAINER,
        "--model.pretrained", str(policy), "--model.budget.frames", str(budget),
    ], workdir / "finetune-nethack-ks", log)
    # fmt: on
    result.update(status="done", pretrain_s=pretrain_s, bc_steps=bc_steps)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=200_000, help="fine-tuning env frames")
    parser.add_argument("--pretrain-budget", type=int, default=400_000)
    parser.add_argument("--nethack-budget", type=int, default=2048, help="0 skips NetHack")
    args = parser.parse_args(argv)
    result = run(args.budget, args.pretrain_budget, nethack_budget=args.nethack_budget)
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()


def evaluation_overlap(
    apple_budget: int = 200_000,
    nethack_budget: int = 4096,
    apple_pretrain_budget: int = 100_000,
    workdir=None,
) -> dict:
    """Issue 14.3: the same ``lit-rl fit`` with its evaluations in the training process and in the
    background (``model.evaluation.background``), side by side, each in its own process: Apple EWC from
    a briefly pre-trained π* (its preset's evaluation: 256 episodes every 50k frames) and NetHack
    none from a randomly initialised tiny π* (its CPU preset: 8 episodes every 2,048 frames, FAR
    from the shipped Dlvl-4 start states). Wall times are whole processes (start-up, π*'s
    evaluation and the wait for the last evaluation included) and the ``summary.json`` fit time;
    the evaluation histories of the two modes must be equal."""
    import os
    import subprocess
    import sys

    from lit_rl.models.policy_io import save_policy
    from lit_rl.scenarios.nethack import NetHack

    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-evaluation-"))
        workdir = Path(workdir)
        log = workdir / "cli.log"
        apple_policy = pretrain_apple(workdir, apple_pretrain_budget, log)
        torch.manual_seed(0)
        nethack = NetHack(size="tiny", max_episode_steps=500)
        nethack_policy = workdir / "nethack-pi.pt"
        save_policy(nethack_policy, nethack.make_policy().modules(), nethack.describe())
        base = ["fit", "--config", "configs/base.yaml"]
        # fmt: off
        cases = {
            "apple": [*base, "--config", "configs/env/apple.yaml", "--config", "configs/method/ewc.yaml",
                      *TRAINER,
                      "--model.budget.frames", str(apple_budget)],
            "nethack": [*base, "--config", "configs/env/nethack.yaml", *TRAINER,
                        "--model.budget.frames", str(nethack_budget),
                        "--model.scenario.init_args.far_dlvl", "4",
                        "--model.scenario.init_args.start_states", "tests/data/start_states_dlvl4.json"],
        }
        # fmt: on
        policies = {"apple": apple_policy, "nethack": nethack_policy}
        runs: dict = {}
        for name, args in cases.items():
            histories = {}
            for mode in ("foreground", "background"):
                run_dir = workdir / f"{name}-{mode}"
                flag = "true" if mode == "background" else "false"
                # a copy of π* per mode: each evaluates π* itself (no reuse from π*'s evaluation cache)
                pistar = Path(shutil.copy(policies[name], workdir / f"{name}-{mode}-pi.pt"))
                command = [sys.executable, "-m", "lit_rl.cli", *args, "--model.evaluation.background", flag,
                           "--model.pretrained", str(pistar), "--run_dir", str(run_dir)]  # fmt: skip
                load = os.getloadavg()[0]
                start = time.perf_counter()
                with open(log, "a") as sink:
                    subprocess.run(command, cwd=ROOT, stdout=sink, stderr=sink, check=True, timeout=1200)
                seconds = time.perf_counter() - start
                summary = json.loads((run_dir / "summary.json").read_text())
                histories[mode] = summary["eval_history"]
                runs[f"{name}/{mode}"] = {
                    "process_s": seconds, "fit_s": summary["wall_time_s"], "frames": summary["env_steps"],
                    "evaluations": len(summary["eval_history"]), "load_average_before": load,
                }  # fmt: skip
            runs[f"{name}/background"]["same_history"] = histories["background"] == histories["foreground"]
        return {"runs": runs, "apple_budget": apple_budget, "nethack_budget": nethack_budget}
