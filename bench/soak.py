"""Soak test (``make soak``): one AppleRetrieval run killed with SIGKILL many times, resumed each time.

Not part of ``make test``: it takes minutes. The run is killed ``--kills`` times (default 20) and
resumed with ``--ckpt_path last`` (what ``RESUME=1`` passes) after each kill; then it runs to the
end. With ``--devices 2`` (``make soak DEVICES=2``) the run is a 2-rank DDP run (gloo) with
background evaluation on, and each kill hits one rank or all of them (rank 0, rank 1 or the whole
process group, drawn at random): a rank whose peer was killed must end by itself (gloo notices the
closed connection, lit_rl/training/rank_faults.py reports it), within ``PEER_EXIT_S``. The kill
moments are chosen to hit the windows a random kill rarely hits:

- ``save``: just after a checkpoint save begins (while the temporary file is written, fsynced or
  renamed);
- ``eval``: just after an evaluation begins;
- ``startup``: while the resumed process starts and restores its checkpoint;
- ``random``: a moment within the first 10 s of training.

The child process is the real CLI (``python -m bench.soak fit …`` with ``LIT_RL_SOAK_MARKERS`` set,
so that DDP's rank 1, which Lightning starts with the same command line, is marked too); the harness
only wraps two functions in it so that they append a line to a marker file as they start (``save``,
``eval``, and ``train`` at the start of training), which tells the harness when to kill.

Checks at the end, against a reference run with the same settings that is never killed:

- the killed run finished its whole budget: same ``env_steps``, method, env and seed as the
  reference, and evaluations at the same frame counts;
- every checkpoint left on disk loads (zip checksums and ``torch.load``), the final ``last.ckpt``
  holds the final frame count, and no temporary file is left;
- ``metrics.csv`` has exactly the reference's training and evaluation frame counts, each once. A
  kill loses the frames trained since the last checkpoint; those are trained and logged again, so
  "missing" means a frame count of the finished run without a row, and "duplicated" a frame count
  with two;
- with several ranks: every rank ended with the same weights (each writes its final policy beside the
  run, ``RankWeights``), and no rank outlived a killed peer by more than ``PEER_EXIT_S``. (The
  weights are not compared with the never-killed run's: a resumed run seeds its environments
  afresh, lit_rl/training/finetune.py ``_env_seed``, so it plays other episodes.)

Figures (kills by kind and target, kills that left a half-written temporary file, resumes, wall
times, the machine's load) are printed and written to ``<out>/soak.json`` and, with ``--report``, to
a Markdown file (``make soak`` writes ``bench/results_soak[_ddp].md``).
"""

from __future__ import annotations

import argparse
import contextlib
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

from lightning import Callback

ROOT = Path(__file__).resolve().parents[1]
BATCH = 6400  # apple: 64 envs × 100 steps


MARKERS = "LIT_RL_SOAK_MARKERS"
#: seconds a rank may outlive a killed peer (gloo notices at the next collective; the watchdog of
#: lit_rl/training/rank_faults.py ends a stuck clean-up after 60 s)
PEER_EXIT_S = 90


def child() -> None:
    """Run ``lit-rl`` on this process's command line with marker lines written when a checkpoint
    save or an evaluation starts (the markers file is named by ``LIT_RL_SOAK_MARKERS``)."""
    import lit_rl.checkpoint_io as checkpoint_io
    from callbacks.run_summary import RunSummary
    from callbacks.subspace_evaluation import SubspaceEvaluation
    from lit_rl.cli import main

    markers, rank = Path(os.environ[MARKERS]), os.environ.get("LOCAL_RANK", "0")

    def mark(kind: str) -> None:
        with open(markers, "a") as f:
            f.write(f"{kind} {rank} {time.time()}\n")

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
    main()


class RankWeights(Callback):
    """Each rank writes its final policy weights beside the run (``rank<r>.pt``), so the soak can
    check that every rank ended with the same weights."""

    def on_train_end(self, trainer, pl_module) -> None:
        from lit_rl.models.policy_io import atomic_torch_save

        path = Path(trainer.default_root_dir) / f"rank{trainer.global_rank}.pt"
        atomic_torch_save(
            {"policy": pl_module.policy.state_dict(), "frames": int(pl_module.env_frames)}, path
        )


def fit_args(
    run: Path, pretrained: Path, budget: int, method: str, resume: bool, devices: int = 1
) -> list[str]:
    methods = [] if method == "none" else ["--config", str(method_config(method))]
    ddp = []
    if devices > 1:
        ddp = ["--config", str(ROOT / "configs/trainer/ddp.yaml"), "--trainer.devices", str(devices),
               "--model.evaluation.background", "true",
               "--trainer.callbacks+", "bench.soak.RankWeights"]  # fmt: skip
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
        *ddp,
        *(["--ckpt_path", "last"] if resume else []),
    ]  # fmt: skip


def method_config(method: str) -> Path:
    for path in (ROOT / f"configs/method/apple/{method}.yaml", ROOT / f"configs/method/{method}.yaml"):
        if path.exists():
            return path
    raise SystemExit(f"soak: no config for method {method!r} under configs/method/")


class Launch:
    """One child process of the killed run (and, under DDP, the ranks and workers it starts, all in
    one session of their own), with its stderr collected to a file."""

    def __init__(self, out: Path, run: Path, markers: Path, args: list[str], index: int):
        self.log = out / "logs" / f"{index:02d}.stderr"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.markers = markers
        markers.write_text("")
        self.temporaries_at_start = set(temporary_files(run))
        command = [sys.executable, "-m", "bench.soak", *args]
        self.started = time.monotonic()
        with open(self.log, "w") as err:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                         env={**os.environ, MARKERS: str(markers)},
                                         start_new_session=True)  # fmt: skip

    def count(self, kind: str) -> int:
        return sum(line.split()[0] == kind for line in self.markers.read_text().splitlines() if line)

    def wait_for_marker(self, kind: str, deadline: float) -> bool:
        """Poll (every millisecond) for a new ``kind`` line in the marker file."""
        seen = self.count(kind)
        while self.proc.poll() is None and time.monotonic() < deadline:
            if self.count(kind) > seen:
                return True
            time.sleep(0.001)
        return False

    def rank_pid(self, rank: int) -> int | None:
        """The process of DDP rank ``rank`` (rank 0 is the launched process; Lightning starts the
        others with ``LOCAL_RANK`` set; forked workers keep their parent's)."""
        if rank == 0:
            return self.proc.pid
        for pid in session_processes(self.proc.pid):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"LOCAL_RANK={rank}".encode() in environ and pid != self.proc.pid:
                parent = int(Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[1])
                if parent == self.proc.pid:
                    return pid
        return None

    def kill(self, target: str) -> float | None:
        """SIGKILL ``all`` (the whole session) or one rank (``rank0``, ``rank1``); returns the
        seconds the rest of the session took to end by itself (``None``: it did not within
        ``PEER_EXIT_S`` and was killed)."""
        pid = None if target == "all" else self.rank_pid(int(target.removeprefix("rank")))
        if pid is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        while session_processes(self.proc.pid) and time.monotonic() - killed_at < PEER_EXIT_S:
            self.proc.poll()
            time.sleep(0.05)
        gone = not session_processes(self.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return round(time.monotonic() - killed_at, 1) if gone else None


def session_processes(session: int) -> list[int]:
    """Live (not zombie) processes of the session ``session``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().split(") ")[-1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def kill_once(launch: Launch, kind: str, target: str, rng: random.Random, run: Path) -> dict:
    """Wait for the moment of ``kind``, SIGKILL ``target``, and describe what was hit."""
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
    saves, evals = launch.count("save"), launch.count("eval")
    after_s = round(time.monotonic() - launch.started, 2)
    rest_ended_s = launch.kill(target)
    temporaries = sorted(set(temporary_files(run)) - launch.temporaries_at_start)
    return {
        "kind": kind,
        "target": target,
        "killed": True,
        "after_s": after_s,
        "saves_started": saves,
        "evals_started": evals,
        "temporary_left": temporaries,
        "rest_ended_by_itself_s": rest_ended_s,
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


def soak(out: Path, kills: int, budget: int, method: str, seed: int, devices: int = 1) -> dict:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("killed", "reference", "logs"):
        shutil.rmtree(out / name, ignore_errors=True)
    load_before = uptime()
    pretrained = pretrained_policy(out)
    run, reference, markers = out / "killed", out / "reference", out / "markers.log"

    started = time.monotonic()
    result = run_to_end(out, fit_args(reference, pretrained, budget, method, False, devices), 98)
    if result.returncode != 0:
        raise SystemExit(f"soak: the reference run failed, see {out / 'logs/98.stderr'}")
    reference_s = time.monotonic() - started

    kinds = kill_kinds(kills, rng)
    targets = ["all"] + [f"rank{r}" for r in range(devices)] if devices > 1 else ["all"]
    started, events, launches = time.monotonic(), [], 0
    for index, kind in enumerate(kinds):
        args = fit_args(run, pretrained, budget, method, index > 0, devices)
        launch = Launch(out, run, markers, args, index)
        launches += 1
        target = "all" if kind == "startup" else rng.choice(targets)  # at start-up rank 1 may not exist
        event = kill_once(launch, kind, target, rng, run)
        events.append(event)
        print(f"soak: kill {index + 1}/{kills}: {json.dumps(event)}", flush=True)
        if not event["killed"]:
            break
    final = run_to_end(out, fit_args(run, pretrained, budget, method, True, devices), len(kinds))
    launches += 1
    killed_s = time.monotonic() - started
    if final.returncode != 0:
        raise SystemExit(f"soak: the final resume failed, see {out / 'logs' / f'{len(kinds):02d}.stderr'}")

    logs = sorted((out / "logs").glob("*.stderr"))
    fallbacks = sum(p.read_text().count("lit-rl: warning:") for p in logs)
    killed = [e for e in events if e["killed"]]
    results = check(run, reference)
    if devices > 1:
        results += check_ranks(run, devices, killed)
    figures = {
        "budget_frames": budget,
        "devices": devices,
        "method": method,
        "background_evaluation": devices > 1,
        "kills": len(killed),
        "kills_by_kind": {
            k: sum(e["kind"] == k for e in killed) for k in ("save", "eval", "random", "startup")
        },
        "kills_by_target": {t: sum(e["target"] == t for e in killed) for t in targets},
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


#: the share of each kind of kill (of 20: 6 saves, 6 evaluations, 5 random moments, 3 start-ups)
KIND_SHARES = {"save": 6, "eval": 6, "random": 5, "startup": 3}


def kill_kinds(kills: int, rng: random.Random) -> list[str]:
    """``kills`` kinds in ``KIND_SHARES`` proportions (largest remainders; every kind at least once
    when there are enough kills), shuffled."""
    total = sum(KIND_SHARES.values())
    exact = {kind: kills * share / total for kind, share in KIND_SHARES.items()}
    counts = {kind: int(value) for kind, value in exact.items()}
    for kind in sorted(exact, key=lambda k: counts[k] - exact[k])[: kills - sum(counts.values())]:
        counts[kind] += 1
    kinds = [kind for kind, count in counts.items() for _ in range(count)]
    rng.shuffle(kinds)
    return kinds


def check_ranks(run: Path, devices: int, killed: list[dict]) -> list[tuple[str, bool, str]]:
    """Under DDP: identical final weights on every rank, and no rank outlived a killed peer."""
    from lit_rl.safe_load import safe_load

    ranks = [safe_load(run / f"rank{r}.pt") for r in range(devices)]
    differing = [name for name, value in ranks[0]["policy"].items()
                 if any(not value.equal(other["policy"][name]) for other in ranks[1:])]  # fmt: skip
    frames = [r["frames"] for r in ranks]
    same = not differing and len(set(frames)) == 1
    one_rank = [e for e in killed if e["target"] != "all"]
    outlived = [e["kind"] for e in one_rank if e["rest_ended_by_itself_s"] is None]
    longest = max((e["rest_ended_by_itself_s"] for e in one_rank if e["rest_ended_by_itself_s"]), default=0)
    return [
        ("every rank ended with the same weights", same, f"frames {frames}, differing {differing[:3]}"),
        (f"every rank whose peer was killed ended by itself within {PEER_EXIT_S} s", not outlived,
         f"{len(one_rank)} one-rank kills, longest {longest} s, outlived: {outlived}"),
    ]  # fmt: skip


def markdown(figures: dict, command: str) -> str:
    """The soak's figures as the committed report (``--report``)."""
    lines = [
        f"# Soak: {figures['devices']} process(es), {figures['kills']} SIGKILLs",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: AppleRetrieval, "
        f"method {figures['method']}, {figures['budget_frames']:,} frames per rank, background evaluation "
        f"{'on' if figures['background_evaluation'] else 'off'}.",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for key in ("kills", "kills_by_kind", "kills_by_target", "kills_that_left_a_half_written_temporary_file",
                "kills_after_an_evaluation_started", "resumes", "resumes_that_fell_back_to_last_prev",
                "wall_time_reference_s", "wall_time_killed_run_s", "load_before", "load_after"):  # fmt: skip
        lines.append(f"| {key.replace('_', ' ')} | {figures[key]} |")
    lines += ["", f"Checks: {figures['checks_passed']} of {figures['checks']} passed.", ""]
    lines += [
        f"- {'PASS' if r['passed'] else 'FAIL'} {r['check']} ({r['detail']})" for r in figures["results"]
    ]
    lines += [
        "",
        "Kills (kind, target, seconds after launch, seconds the other rank took to end by itself):",
        "",
    ]
    for e in figures["events"]:
        if e["killed"]:
            lines.append(
                f"- {e['kind']}, {e['target']}, {e['after_s']} s, rest ended: {e['rest_ended_by_itself_s']}"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.soak [--kills N] [--budget F] [--method M] [--devices N] [--out DIR]
    [--report FILE]``. Run it on a
    quiet copy of the code (``git archive HEAD``): a resume after the code changed under the run
    is a different test."""
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get(MARKERS):  # a child of the killed run (each DDP rank too)
        child()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--budget", type=int, default=1_000_000, help="environment frames")
    parser.add_argument("--method", default="ewc")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    parser.add_argument("--out", type=Path, default=Path("/tmp/lit_rl_soak"))
    parser.add_argument("--devices", type=int, default=1, help="DDP processes (gloo on the CPU)")
    parser.add_argument("--report", type=Path, default=None, help="also write the figures as Markdown here")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.budget < BATCH:
        parser.error(f"--kills must be ≥ 1 and --budget ≥ {BATCH}")
    figures = soak(args.out, args.kills, args.budget, args.method, args.seed, args.devices)
    if args.report is not None:
        args.report.write_text(markdown(figures, "python -m bench.soak " + " ".join(argv)))
    for item in figures["results"]:
        print(f"soak: {'PASS' if item['passed'] else 'FAIL'} {item['check']} ({item['detail']})")
    keys = ("kills", "kills_by_kind", "kills_by_target", "kills_that_left_a_half_written_temporary_file",
            "resumes", "resumes_that_fell_back_to_last_prev", "wall_time_reference_s",
            "wall_time_killed_run_s",
            "checks_passed", "checks", "load_before", "load_after")  # fmt: skip
    for key in keys:
        print(f"soak: {key}: {figures[key]}")
    print(f"soak: figures in {args.out / 'soak.json'}")
    if figures["checks_passed"] != figures["checks"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
