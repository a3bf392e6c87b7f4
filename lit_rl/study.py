"""``make study ENV=<nethack|minihack>``: a forgetting study as one resumable command (issues 15, 23).

The NetHack study (``configs/study/nethack.yaml``) records an expert and clones π*; the MiniHack
study (``configs/study/minihack.yaml``, docs/minihack.md) walks FAR hand-overs and trains π* by RL.
The stages below are the NetHack study's; the MiniHack study's differ in two (``MINIHACK_STAGES``).

Stages, each skipped when its product is already there, so a stopped study continues where it
stopped when the same command runs again:

1. ``record``: the scripted expert plays ``record.games`` recorded games (BC π*'s data and BC / EWC
   replay's) and then collects ``record.far_count`` replay-verified hand-over states at the preset's
   ``far_dlvl`` (``lit_rl.recording.nethack_games``). Done when ``<data>/study_record.json`` exists; an
   interrupted recording is discarded and recorded again (NLE cannot append to a half-written game).
2. ``pretrain``: π* by behavioural cloning of those games plus a critic-only warm-up
   (``configs/pretrain/nethack.yaml``). Done when ``<root>/pretrained/<preset>.pt`` exists.
3. ``reference``: a uniformly random policy through the same evaluator, episodes, seed and
   subspaces as the runs (``<root>/runs/references.json``), the floor π* must clear on CLOSE and
   FAR; π*'s own values are every run's frame-0 evaluation (made by the first run, read by the
   others from π*'s evaluation cache, ``lit_rl.evaluation_cache``).
4. ``finetune``: every seed × method with ``lit-rl fit`` (``jobs`` at a time, every method of a
   seed before the next seed) into
   ``<root>/runs/<preset>-<method>-s<seed>``. A run whose ``summary.json`` says ``finished`` is
   skipped; one with a checkpoint is resumed from it (``--ckpt_path last``); any other starts
   afresh (a folder left by an attempt stopped before its first checkpoint is cleared first).
   ``lit_rl.training.run_identity.run_state`` is the one rule for telling these apart.
5. ``report``: ``lit_rl.figures.report`` over the study's runs → ``<root>/reports/`` (tables, the paper's
   Figures 3a, 4 and 5 at this scale).

The MiniHack study's ``record`` writes ``record.far_count`` FAR hand-overs of the scripted walker,
each replay-checked, to ``<data>/start_states_far.json``; its ``pretrain`` is PPO from those FAR
starts (``configs/pretrain/minihack.yaml``, ``pretrain.frames``), a run like the fine-tuning runs
(resumed from its checkpoint), whose π* is kept only if its last FAR success is at least
``pretrain.min_far_success``; its ``report`` adds the phase figures (``lit_rl.figures.minihack``).

Wall time per stage accumulates across attempts in ``<root>/study_times.json``.

    python -m lit_rl.study --config configs/study/nethack.yaml [--config <overlay>.yaml]
    python -m lit_rl.study --config configs/study/minihack.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf

from lit_rl.envs.minihack import make_far_start_states, save_start_states
from lit_rl.evaluation import SubspaceEvaluator, evaluate_episodes
from lit_rl.figures import minihack as minihack_figures
from lit_rl.figures import report
from lit_rl.recording.nethack_games import record_games, record_start_states
from lit_rl.scenarios.minihack import MiniHack
from lit_rl.scenarios.nethack import NetHack
from lit_rl.training.run_identity import run_state

STAGES = ("record", "pretrain", "reference", "finetune", "report")
METHOD_CONFIGS = Path("configs/method")
#: the scenarios a study runs (a preset's first word), and the MiniHack study's own stage settings
SCENARIOS = ("nethack", "minihack")
MINIHACK_STAGES = {"record": ("far_count", "seed"), "pretrain": ("frames", "min_far_success")}


def load_config(paths: list[Path]) -> dict:
    """The study settings: the first file overlaid by the next ones (presets hold what differs)."""
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(
                f"study config {path} not found: pass --config configs/study/nethack.yaml"
            )
    config = merge_yaml(paths)
    for key in ("root", "preset", "record", "pretrain", "methods", "seeds"):
        if key not in config:
            raise ValueError(f"study config lacks '{key}': start from configs/study/nethack.yaml")
    scenario = str(config["preset"]).split("_")[0]
    if scenario not in SCENARIOS:
        raise ValueError(f"study preset {config['preset']!r}: studies run {', '.join(SCENARIOS)} presets")
    for stage, keys in MINIHACK_STAGES.items() if scenario == "minihack" else ():
        missing = [k for k in keys if k not in config[stage]]
        if missing:
            raise ValueError(f"study config's {stage} lacks {missing}: see configs/study/minihack.yaml")
    unknown = [m for m in config["methods"] if m != "none" and not (METHOD_CONFIGS / f"{m}.yaml").is_file()]
    if unknown:
        raise ValueError(
            f"study methods {unknown} have no configs/method/<name>.yaml: use none, bc, ks, ewc, …"
        )
    return config


def env_configs(preset: str) -> list[Path]:
    """The fine-tuning overlay chain of a preset: base → its scenario's CPU preset → the preset."""
    scenario = preset.split("_")[0]
    chain = [
        Path("configs/base.yaml"),
        Path(f"configs/env/{scenario}.yaml"),
        Path(f"configs/env/{preset}.yaml"),
    ]
    missing = [str(p) for p in chain if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"study preset {preset!r}: {missing} not found (run from the repository root)"
        )
    return list(dict.fromkeys(chain))


def method_config(preset: str, method: str, folders: list[str] = ()) -> Path:
    """A method's settings: the study's own ``method_dirs`` first, then the preset's, its scenario's,
    the generic file (as ``make finetune`` picks them)."""
    scenario = preset.split("_")[0]
    for folder in (*map(Path, folders), METHOD_CONFIGS / preset, METHOD_CONFIGS / scenario, METHOD_CONFIGS):
        if (folder / f"{method}.yaml").is_file():
            return folder / f"{method}.yaml"
    raise FileNotFoundError(f"no configs/method/{method}.yaml")


class Study:
    """One study under ``config['root']``; ``run()`` carries out the stages not done yet."""

    def __init__(self, config: dict, python: str = sys.executable):
        self.config = config
        self.root = Path(config["root"])
        self.preset = config["preset"]
        self.scenario = self.preset.split("_")[0]
        self.python = python
        self.data = self.root / "data"
        self.pretrained = self.root / "pretrained" / f"{self.preset}.pt"
        self.runs = self.root / "runs"
        self.reports = self.root / "reports"
        self.overrides = self.root / "overrides.yaml"
        self.env_config = merge_yaml(env_configs(self.preset), config.get("overrides") or {})
        self.failed: list[str] = []

    # --- bookkeeping ------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        print(f"study [{time.strftime('%H:%M:%S')}] {message}", flush=True)

    def add_time(self, stage: str, seconds: float) -> None:
        path = self.root / "study_times.json"
        times = json.loads(path.read_text()) if path.is_file() else {}
        times[stage] = round(times.get(stage, 0.0) + seconds, 1)
        path.write_text(json.dumps(times, indent=1))

    def log_file(self, name: str) -> Path:
        """Where a stage's command writes its output (appended across attempts)."""
        folder = self.root / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{name}.log"

    def sh(self, args: list[str], log: Path | None = None) -> int:
        """Run a command, its output into ``log`` (appended) or ours; returns its exit code."""
        self.log("$ " + " ".join(args))
        if log is None:
            return subprocess.call(args)
        with log.open("a") as handle:
            return subprocess.call(args, stdout=handle, stderr=subprocess.STDOUT)

    def run(self, stages: tuple[str, ...] = STAGES) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        # the study's own changes to the preset, the last config of every fine-tuning run
        self.overrides.write_text(yaml.safe_dump(self.config.get("overrides") or {}))
        for stage in stages:
            started = time.monotonic()
            ran = getattr(self, stage)()
            if ran:
                self.add_time(stage, time.monotonic() - started)
            if self.failed:
                self.log(f"stopped: {', '.join(self.failed)} failed; rerun the same command to continue")
                return 1
        self.log(f"done: {self.reports / 'report.md'}")
        return 0

    # --- stages -----------------------------------------------------------------------------------
    def record(self) -> bool:
        marker = self.data / "study_record.json"
        if marker.is_file():
            self.log(f"record: done ({marker})")
            return False
        if self.scenario == "minihack":
            return self.record_minihack(marker)
        shutil.rmtree(self.data, ignore_errors=True)  # a half-recorded game cannot be continued
        rec = self.config["record"]
        self.log(f"record: {rec['games']} expert games, then {rec['far_count']} hand-over states")
        games = record_games(self.data, rec["games"], rec["seed"], rec["game_steps"])
        far_dlvl = self.scenario_args()["far_dlvl"]
        record_start_states(self.data, [far_dlvl], rec["far_count"], rec["seed"], rec["game_steps"])
        states = json.loads((self.data / "start_states_report.json").read_text())
        if states["states"][str(far_dlvl)] < rec["far_count"]:
            self.failed.append(
                f"record (only {states['states'][str(far_dlvl)]} states reached Dlvl {far_dlvl})"
            )
            return True
        marker.write_text(json.dumps({"games": games, "start_states": states}, indent=1))
        return True

    def record_minihack(self, marker: Path) -> bool:
        """FAR hand-overs of the scripted walker, each replayed once to check it lands in FAR."""
        rec = self.config["record"]
        self.log(f"record: {rec['far_count']} FAR hand-overs of the scripted walker")
        self.data.mkdir(parents=True, exist_ok=True)
        states = make_far_start_states(rec["far_count"], rec["seed"])
        save_start_states(self.far_states_file, states)
        marker.write_text(json.dumps({"start_states": len(states), "file": str(self.far_states_file)}))
        return True

    @property
    def far_states_file(self) -> Path:
        return self.data / "start_states_far.json"

    def pretrain(self) -> bool:
        if self.pretrained.is_file():
            self.log(f"pretrain: done ({self.pretrained})")
            return False
        if self.scenario == "minihack":
            return self.pretrain_minihack()
        run_dir = self.runs / f"{self.preset}-pretrain-s{self.config['record']['seed']}"
        shutil.rmtree(run_dir, ignore_errors=True)  # BC keeps no checkpoint: an interrupted one restarts
        bc = self.config["pretrain"]
        scenario = "--model.init_args.scenario.init_args"
        args = [self.python, "-m", "lit_rl.cli", "fit", "--config", "configs/pretrain/nethack.yaml",
                f"{scenario}.data_dir", str(self.data), f"{scenario}.size", str(self.scenario_args()["size"]),
                f"{scenario}.far_dlvl", str(self.scenario_args()["far_dlvl"]),
                f"{scenario}.max_episode_steps", str(self.scenario_args()["max_episode_steps"]),
                "--model.init_args.export.policy", str(self.pretrained),
                "--model.init_args.critic_warmup_frames", str(bc["critic_warmup_frames"]),
                "--trainer.max_steps", str(bc["steps"]), "--run_dir", str(run_dir),
                "--seed_everything", str(self.config["record"]["seed"])]  # fmt: skip
        log = self.log_file(run_dir.name)
        if self.sh(args, log) != 0 or not self.pretrained.is_file():
            self.failed.append(f"pretrain (log: {log})")
        return True

    def pretrain_minihack(self) -> bool:
        """π* by PPO from FAR starts, a resumable run; exported beside the final path and moved
        there only when its last FAR success reaches ``pretrain.min_far_success``."""
        settings = self.config["pretrain"]
        seed = self.config["record"]["seed"]
        run_dir = self.runs / f"{self.preset}-pretrain-s{seed}"
        candidate = self.pretrained.with_suffix(".candidate.pt")
        state = run_state(run_dir)
        if state != "done":
            if state == "fresh":
                shutil.rmtree(run_dir, ignore_errors=True)
            options = ["--model.budget.frames", str(settings["frames"])]
            options += ["--model.export.policy", str(candidate)]
            args = self.fit_args(
                [Path("configs/pretrain/minihack.yaml")], options, seed, run_dir, state == "resume"
            )
            log = self.log_file(run_dir.name)
            if self.sh(args, log) != 0 or run_state(run_dir) != "done":
                self.failed.append(f"pretrain (log: {log})")
                return True
        success = json.loads((run_dir / "summary.json").read_text())["eval"]["far"]["success_rate"]
        if success < settings["min_far_success"] or not candidate.is_file():
            self.failed.append(
                f"pretrain (π*'s FAR success {success:.2f} < pretrain.min_far_success "
                f"{settings['min_far_success']}: raise pretrain.frames and delete {run_dir})"
            )
            return True
        self.log(f"pretrain: π*'s FAR success {success:.2f}")
        candidate.replace(self.pretrained)
        return True

    def reference(self) -> bool:
        path = self.runs / "references.json"
        if path.is_file():
            self.log(f"reference: done ({path})")
            return False
        scenario = self.make_scenario()
        evaluation = self.env_config["model"]["evaluation"]
        evaluator = SubspaceEvaluator(evaluation["episodes"], evaluation.get("seed", 10_000))
        self.log(f"reference: a random policy, {evaluator.episodes} episodes per subspace")
        results = {}
        for subspace in scenario.subspaces:
            env = scenario.make_env(evaluator.episodes, subspace, evaluator.seed)
            torch.manual_seed(evaluator.seed)
            results[subspace] = evaluate_random(env, scenario.max_episode_steps)
        self.runs.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"random": results}, indent=1))
        return True

    def finetune(self) -> bool:
        todo = []
        # seed by seed: a study stopped early has every method at its first seeds
        for seed in self.config["seeds"]:
            for method in self.config["methods"]:
                run_dir = self.runs / f"{self.preset}-{method}-s{seed}"
                state = run_state(run_dir)
                if state == "done":
                    self.log(f"finetune: {run_dir.name} done")
                    continue
                if state == "fresh":  # stopped before its first checkpoint (or never started)
                    shutil.rmtree(run_dir, ignore_errors=True)
                todo.append((self.finetune_args(method, seed, run_dir, state == "resume"), run_dir))
        if not todo:
            return False
        running: list[tuple[subprocess.Popen, Path, object]] = []
        while todo or running:
            while todo and len(running) < int(self.config.get("jobs", 1)):
                args, run_dir = todo.pop(0)
                self.log("$ " + " ".join(args))
                handle = self.log_file(run_dir.name).open("a")
                running.append(
                    (subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT), run_dir, handle)
                )
            time.sleep(1.0)
            for entry in list(running):
                process, run_dir, handle = entry
                if process.poll() is None:
                    continue
                running.remove(entry)
                handle.close()
                if process.returncode != 0 or run_state(run_dir) != "done":
                    log = self.log_file(run_dir.name)
                    self.failed.append(f"{run_dir.name} (exit {process.returncode}, log: {log})")
                else:
                    self.log(f"finetune: {run_dir.name} finished")
        return True

    def finetune_args(self, method: str, seed: int, run_dir: Path, resume: bool) -> list[str]:
        own = self.config.get("method_dirs") or []
        methods = [method_config(self.preset, method, own)] if method != "none" else []
        return self.fit_args(methods, ["--model.pretrained", str(self.pretrained)], seed, run_dir, resume)

    def fit_args(
        self, extra: list[Path], options: list[str], seed: int, run_dir: Path, resume: bool
    ) -> list[str]:
        """``lit-rl fit`` over the preset's chain, ``extra`` configs, the CPU trainer, the CSV
        logger and the study's overrides, with the study's data, ``options``, seed and run folder."""
        configs = [*env_configs(self.preset), *extra, Path("configs/trainer/cpu.yaml"),
                   Path("configs/logger/csv.yaml"), self.overrides]  # fmt: skip
        args = [self.python, "-m", "lit_rl.cli", "fit"]
        for path in configs:
            args += ["--config", str(path)]
        args += [*self.data_args(), *options, "--seed_everything", str(seed), "--run_dir", str(run_dir)]
        return args + (["--ckpt_path", "last"] if resume else [])

    def report(self) -> bool:
        path = report.write_report(self.runs, self.reports)
        if self.scenario == "minihack":
            minihack_figures.write_figures(self.runs, self.reports, self.preset)
        self.log(f"report: {path}")
        return True

    def scenario_args(self) -> dict:
        return dict(self.env_config["model"]["scenario"]["init_args"])

    def data_args(self) -> list[str]:
        """Where the study's recorded data is, for every run's scenario: NetHack's data folder,
        MiniHack's FAR hand-over file."""
        if self.scenario == "minihack":
            return ["--model.scenario.init_args.start_states", str(self.far_states_file)]
        return ["--model.scenario.init_args.data_dir", str(self.data)]

    def make_scenario(self):
        """The study's scenario with its data (the reference policy's evaluation plays it)."""
        if self.scenario == "minihack":
            return MiniHack(**{**self.scenario_args(), "start_states": str(self.far_states_file)})
        return NetHack(**{**self.scenario_args(), "data_dir": str(self.data)})


def merge_yaml(paths: list[Path], *overlays: dict) -> dict:
    """The YAML configs overlaid in order, then ``overlays``, as the CLI composes them
    (OmegaConf: nested mappings merged key by key, lists replaced)."""
    merged = OmegaConf.merge(*(OmegaConf.load(path) for path in paths), *overlays)
    return OmegaConf.to_container(merged)


@torch.no_grad()
def evaluate_random(env, max_steps: int) -> dict[str, float]:
    """A uniformly random policy through the one evaluation loop (``evaluate_episodes``)."""
    metrics = evaluate_episodes(env, lambda td: env.rand_action(td), max_steps)
    env.close()
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        type=Path,
        action="append",
        required=True,
        help="study settings (configs/study/nethack.yaml); later files overlay earlier ones",
    )
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("lit_rl").setLevel(logging.INFO)  # the recorder's progress lines
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    bad = [s for s in stages if s not in STAGES]
    try:
        if bad:
            raise ValueError(f"--stages {','.join(bad)}: choose from {','.join(STAGES)}")
        study = Study(load_config(args.config))
    except (ValueError, FileNotFoundError) as error:
        print(f"study: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(study.run(stages))


if __name__ == "__main__":
    main()
