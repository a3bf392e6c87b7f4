"""Soak test (``make soak``): one AppleRetrieval run killed with SIGKILL many times, resumed each time.

Not part of ``make test``: it takes minutes. The run is killed ``--kills`` times (default 20) and
resumed with ``--ckpt_path last`` (what ``RESUME=1`` passes) after each kill; then it runs to the
end. The kill moments are chosen to hit the windows a random kill rarely hits:

- ``save``: just after a checkpoint save begins (while the temporary file is written, fsynced or
  renamed);
- ``eval``: just after an evaluation begins;
- ``startup``: while the resumed process starts and restores its checkpoint;
- ``random``: a moment within the first 10 s of training.

The child process is the real CLI; the harness only wraps two functions in it so that they append a
line to a marker file as they start (``save``, ``eval``, and ``train`` at the start of training),
which tells the harness when to kill.

Checks at the end, against a reference run with the same settings that is never killed:

- the killed run finished its whole budget: same ``env_steps``, method, env and seed as the
  reference, and evaluations at the same frame counts;
- every checkpoint left on disk loads (zip checksums and ``torch.load``), the final ``last.ckpt``
  holds the final frame count, and no temporary file is left;
- ``metrics.csv`` has exactly the reference's training and evaluation frame counts, each once. A
  kill loses the frames trained since the last checkpoint; those are trained and logged again, so
  "missing" means a frame count of the finished run without a row, and "duplicated" a frame count
  with two.

Figures (kills by kind, kills that left a half-written temporary file, resumes, wall times, the
machine's load) are printed and written to ``<out>/soak.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH = 6400  # apple: 64 envs × 100 steps


def child(markers: Path, args: list[str]) -> None:
    """Run ``lit-rl`` with marker lines written when a checkpoint save or an evaluation starts."""
    import lit_rl.checkpoint_io as checkpoint_io
    from callbacks.subspace_evaluation import SubspaceEvaluation
    from lit_rl.cli import main

    def mark(kind: str) -> None:
        with open(markers, "a") as f:
            f.write(f"{kind} {time.time()}\n")

    from callbacks.run_summary import RunSummary

    save, evaluate, train_start = (
        checkpoint_io.atomic_save,
        SubspaceEvaluation._evaluate,
        RunSummary.on_train_start,
    )

    def marked_save(*a, **k):
        mark("save")
        return save(*a, **k)

    def marked_evaluate(self, *a, **k):
        mark("eval")
        return evaluate(self, *a, **k)

    def marked_train_start(self, *a, **k):
        mark("train")
        return train_start(self, *a, **k)

    checkpoint_io.atomic_save = marked_save
    RunSummary.on_train_start = marked_train_start
    SubspaceEvaluation._evaluate = marked_evaluate
    main(args)


def fit_args(run: Path, pretrained: Path, budget: int, method: str, resume: bool) -> list[str]:
    methods = [] if method == "none" else ["--config", str(method_config(method))]
    return [
        "fit",
        "--config", str(ROOT / "configs/base.yaml"),
        "--config", str(ROOT / "configs/env/apple.yaml"),
        *methods,
        "--config", str(ROOT / "configs/trainer/cpu.yaml"),
        "--config", str(ROOT / "configs/logger/csv.yaml"),
        "--model.pretrained", str(pretrained),
        "--model.budget.frames", str(budget),
        "--run_dir", str(run),
        *(["--ckpt_path", "last"] if resume else []),
    ]  # fmt: skip


def method_config(method: str) -> Path:
    for path in (ROOT / f"configs/method/apple/{method}.yaml", ROOT / f"configs/method/{method}.yaml"):
        if path.exists():
            return path
    raise SystemExit(f"soak: no config for method {method!r} under configs/method/")


class Launch:
    """One child process of the killed run, with its stderr collected to a file."""

    def __init__(self, out: Path, run: Path, markers: Path, args: list[str], index: int):
        self.log = out / "logs" / f"{index:02d}.stderr"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.markers = markers
        markers.write_text("")
        self.temporaries_at_start = set(temporary_files(run))
        command = [sys.executable, "-m", "bench.soak", "child", str(markers), "--", *args]
        self.started = time.monotonic()
        with open(self.log, "w") as err:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)

    def wait_for_marker(self, kind: str, deadline: float) -> bool:
        """Poll (every millisecond) for a new ``kind`` line in the marker file."""
        seen = self.markers.read_text().split().count(kind)
        while self.proc.poll() is None and time.monotonic() < deadline:
            if self.markers.read_text().split().count(kind) > seen:
                return True
            time.sleep(0.001)
        return False

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def kill_once(launch: Launch, kind: str, rng: random.Random, run: Path) -> dict:
    """Wait for the moment of ``kind``, SIGKILL, and describe what was hit."""
    deadline = time.monotonic() + 600
    if kind == "startup":
        time.sleep(rng.uniform(0.5, 6.0))
    elif kind == "random":
        launch.wait_for_marker("train", deadline)
        time.sleep(rng.uniform(0.0, 10.0))
    elif kind == "save":
        launch.wait_for_marker("save", deadline)
        time.sleep(rng.uniform(0.0, 0.015))  # a save takes ≈10-20 ms here, mostly fsync
    elif kind == "eval":
        launch.wait_for_marker("eval", deadline)
        time.sleep(rng.uniform(0.0, 0.3))
    if launch.proc.poll() is not None:
        return {"kind": kind, "killed": False, "exit": launch.proc.returncode}
    marks = launch.markers.read_text().split()
    launch.kill()
    temporaries = sorted(set(temporary_files(run)) - launch.temporaries_at_start)
    return {
        "kind": kind,
        "killed": True,
        "after_s": round(time.monotonic() - launch.started, 2),
        "saves_started": marks.count("save"),
        "evals_started": marks.count("eval"),
        "temporary_left": temporaries,
    }


def temporary_files(run: Path) -> list[str]:
    folder = run / "checkpoints"
    return [p.name for p in folder.glob(".*.tmp")] if folder.exists() else []


def run_to_end(out: Path, args: list[str], index: int) -> subprocess.CompletedProcess:
    log = out / "logs" / f"{index:02d}.stderr"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as err:
        return subprocess.run([sys.executable, "-m", "lit_rl.cli", *args], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=err, timeout=3600)  # fmt: skip


def rows(run: Path) -> list[dict]:
    if not (run / "metrics.csv").exists():
        return []
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def frames(table: list[dict], key: str) -> list[int]:
    return [int(float(r[key])) for r in table if r.get(key)]


def check(run: Path, reference: Path) -> list[tuple[str, bool, str]]:
    """The soak's checks: (name, passed, detail)."""
    import torch

    from lit_rl.checkpoint_io import unreadable_reason

    results = []
    summary = json.loads((run / "summary.json").read_text())
    expected = json.loads((reference / "summary.json").read_text())
    same = {
        k: (summary.get(k), expected.get(k)) for k in ("env", "method", "seed", "budget_frames", "env_steps")
    }
    results.append(("summary finished", bool(summary["finished"]), f"finished={summary['finished']}"))
    results.append(("summary equals the never-killed run (env, method, seed, budget, env_steps)",
                    all(a == b for a, b in same.values()), json.dumps(same)))  # fmt: skip
    eval_frames = [e["env_steps"] for e in summary["eval_history"]]
    expected_evals = [e["env_steps"] for e in expected["eval_history"]]
    results.append(("evaluations at the never-killed run's frame counts", eval_frames == expected_evals,
                    f"{len(eval_frames)} evaluations"))  # fmt: skip

    checkpoints = sorted(run.rglob("*.ckpt"))
    unreadable = {p.name: unreadable_reason(p) for p in checkpoints if unreadable_reason(p)}
    results.append(("every checkpoint on disk loads", not unreadable and bool(checkpoints),
                    f"{[p.name for p in checkpoints]} unreadable={unreadable}"))  # fmt: skip
    final = int(torch.load(run / "checkpoints/last.ckpt", weights_only=False)["state_dict"]["env_frames"])
    results.append(
        ("final last.ckpt holds the whole budget", final == summary["env_steps"], f"{final:,} frames")
    )
    leftovers = [p.name for p in run.rglob(".*.tmp")] + [p.name for p in run.rglob(".*.link")]
    results.append(("no temporary checkpoint file left", not leftovers, str(leftovers)))

    table, expected_table = rows(run), rows(reference)
    train, expected_train = frames(table, "train/env_frames"), frames(expected_table, "train/env_frames")
    dupes = len(train) - len(set(train))
    missing = sorted(set(expected_train) - set(train))[:5]
    detail = f"{len(train)} rows, {dupes} duplicated, missing {missing}"
    results.append(("metrics: every training frame count once", train == expected_train, detail))
    evals = frames(table, "eval/env_frames")
    same_evals = evals == frames(expected_table, "eval/env_frames") == eval_frames
    results.append(
        ("metrics: every evaluation once, as in the never-killed run", same_evals, f"{len(evals)} rows")
    )
    steps = [r["step"] for r in table if r.get("time/env_frames_per_s")]
    results.append(
        ("metrics: throughput rows once per step", len(steps) == len(set(steps)), f"{len(steps)} rows")
    )
    return results


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def pretrained_policy(out: Path) -> Path:
    policy = ROOT / "pretrained/apple.pt"
    if policy.exists():
        return policy
    policy = out / "pretrained/apple.pt"
    if not policy.exists():
        print("soak: pre-training π* for apple (≈40 s)", flush=True)
        configs = [
            "base.yaml",
            "env/apple.yaml",
            "pretrain/apple.yaml",
            "trainer/cpu.yaml",
            "logger/csv.yaml",
        ]
        args = [item for name in configs for item in ("--config", str(ROOT / "configs" / name))]
        args += ["--model.export.policy", str(policy), "--run_dir", str(out / "pretrain")]
        result = run_to_end(out, ["fit", *args], 99)
        if result.returncode != 0:
            raise SystemExit(f"soak: pre-training failed, see {out / 'logs/99.stderr'}")
    return policy


def soak(out: Path, kills: int, budget: int, method: str, seed: int) -> dict:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("killed", "reference", "logs"):
        shutil.rmtree(out / name, ignore_errors=True)
    load_before = uptime()
    pretrained = pretrained_policy(out)
    run, reference, markers = out / "killed", out / "reference", out / "markers.log"

    started = time.monotonic()
    result = run_to_end(out, fit_args(reference, pretrained, budget, method, resume=False), 98)
    if result.returncode != 0:
        raise SystemExit(f"soak: the reference run failed, see {out / 'logs/98.stderr'}")
    reference_s = time.monotonic() - started

    kinds = ["save"] * 6 + ["eval"] * 6 + ["random"] * 5 + ["startup"] * 3
    kinds = (kinds * (kills // len(kinds) + 1))[:kills]
    rng.shuffle(kinds)
    started, events, launches = time.monotonic(), [], 0
    for index, kind in enumerate(kinds):
        launch = Launch(out, run, markers, fit_args(run, pretrained, budget, method, resume=index > 0), index)
        launches += 1
        event = kill_once(launch, kind, rng, run)
        events.append(event)
        print(f"soak: kill {index + 1}/{kills}: {json.dumps(event)}", flush=True)
        if not event["killed"]:
            break
    final = run_to_end(out, fit_args(run, pretrained, budget, method, resume=True), len(kinds))
    launches += 1
    killed_s = time.monotonic() - started
    if final.returncode != 0:
        raise SystemExit(f"soak: the final resume failed, see {out / 'logs' / f'{len(kinds):02d}.stderr'}")

    logs = sorted((out / "logs").glob("*.stderr"))
    fallbacks = sum(p.read_text().count("lit-rl: warning:") for p in logs)
    results = check(run, reference)
    killed = [e for e in events if e["killed"]]
    figures = {
        "budget_frames": budget,
        "method": method,
        "kills": len(killed),
        "kills_by_kind": {
            k: sum(e["kind"] == k for e in killed) for k in ("save", "eval", "random", "startup")
        },
        "kills_that_left_a_half_written_temporary_file": sum(bool(e["temporary_left"]) for e in killed),
        "kills_after_an_evaluation_started": sum(
            e["kind"] == "eval" and e["evals_started"] > 0 for e in killed
        ),
        "resumes": launches - 1,
        "resumes_that_fell_back_to_last_prev": fallbacks,
        "wall_time_reference_s": round(reference_s, 1),
        "wall_time_killed_run_s": round(killed_s, 1),
        "checks_passed": sum(ok for _, ok, _ in results),
        "checks": len(results),
        "load_before": load_before,
        "load_after": uptime(),
        "events": events,
        "results": [{"check": name, "passed": ok, "detail": detail} for name, ok, detail in results],
    }
    (out / "soak.json").write_text(json.dumps(figures, indent=2))
    return figures


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.soak [--kills N] [--budget F] [--method M] [--out DIR]``. Run it on a
    quiet copy of the code (``git archive HEAD``): a resume after the code changed under the run
    is a different test."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        child(Path(argv[1]), argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--budget", type=int, default=1_000_000, help="environment frames")
    parser.add_argument("--method", default="ewc")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    parser.add_argument("--out", type=Path, default=Path("/tmp/lit_rl_soak"))
    args = parser.parse_args(argv)
    if args.kills < 1 or args.budget < BATCH:
        parser.error(f"--kills must be ≥ 1 and --budget ≥ {BATCH}")
    figures = soak(args.out, args.kills, args.budget, args.method, args.seed)
    for item in figures["results"]:
        print(f"soak: {'PASS' if item['passed'] else 'FAIL'} {item['check']} ({item['detail']})")
    keys = ("kills", "kills_by_kind", "kills_that_left_a_half_written_temporary_file", "resumes",
            "resumes_that_fell_back_to_last_prev", "wall_time_reference_s", "wall_time_killed_run_s",
            "checks_passed", "checks", "load_before", "load_after")  # fmt: skip
    for key in keys:
        print(f"soak: {key}: {figures[key]}")
    print(f"soak: figures in {args.out / 'soak.json'}")
    if figures["checks_passed"] != figures["checks"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
