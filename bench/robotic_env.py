"""RoboticSequence throughput: raw Meta-World stepping against `RoboticSequenceEnv` under TorchRL.

Every row plays the four Meta-World v3 tasks with uniformly random actions, each episode starting
in a uniformly drawn stage (``start_stages`` = all four: random actions seldom solve a stage and
would otherwise play only hammer). Tasks differ in cost (a push or push-wall step costs ≈3× a
hammer step), so the raw baseline replays the env's own scenes and start-stage draws (same
seeds) in bare loops over Meta-World's ``step``: both play the same tasks in the same order. A
step is one sequence step, summed over sequences. Rows take turns in short slices over several
rounds, so a load change on the shared machine hits every row alike. The raw row runs in one
process (one core); the worker rows use two processes, so on 2 cores they can exceed it.

    python -m bench.robotic_env --seconds 8 --num-envs 8
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torchrl.collectors import Collector
from torchrl.envs import ParallelEnv

from lit_rl.envs.robotic_sequence import (
    ACTION_DIM,
    ROBOTIC_SEQUENCE,
    STEPS_PER_STAGE,
    RoboticSequenceEnv,
    make_task_env,
    sequence_seeds,
)

RAW = "raw Meta-World env.step loop"
ROWS = (
    RAW,
    "RoboticSequenceEnv step_and_maybe_reset",
    "RoboticSequenceEnv + Collector",
    "ParallelEnv (2 workers) + Collector",
    "Collector, 2 worker processes",
)


def raw_batches(num_envs: int, seed: int) -> Iterator[int]:
    """The same sequences without TorchRL: bare loops over Meta-World's ``step``; yields steps.

    Scenes and start-stage draws come from the env's own seeds (`sequence_seeds`), and a scene
    moves on as a sequence does (next stage on success, a new drawn start after the last stage or
    200 steps), so this row plays the tasks in the order the env rows do.
    """
    n_stages = len(ROBOTIC_SEQUENCE)
    seeds = sequence_seeds(seed, num_envs, n_stages)
    scenes = [[make_task_env(name, seeds[i][j + 1]) for j, name in enumerate(ROBOTIC_SEQUENCE)]
              for i in range(num_envs)]  # fmt: skip
    draws = [np.random.default_rng(seeds[i][0]) for i in range(num_envs)]
    stage = [int(draw.integers(n_stages)) for draw in draws]
    steps = [0] * num_envs
    for i in range(num_envs):
        scenes[i][stage[i]].reset()
    rng = np.random.default_rng(seed)
    while True:
        for row in rng.uniform(-1.0, 1.0, size=(16, num_envs, ACTION_DIM)):
            for i, action in enumerate(row):
                _, _, _, _, info = scenes[i][stage[i]].step(action)
                steps[i] += 1
                if info["success"] and stage[i] < n_stages - 1:
                    stage[i] += 1
                elif info["success"] or steps[i] >= STEPS_PER_STAGE:
                    stage[i] = int(draws[i].integers(n_stages))
                else:
                    continue
                steps[i] = 0
                scenes[i][stage[i]].reset()
        yield 16 * num_envs


def make_env(num_envs: int, seed: int) -> RoboticSequenceEnv:
    torch.set_num_threads(1)  # env workers: intra-op threads only fight the stepping loop
    return RoboticSequenceEnv(num_envs, start_stages=ROBOTIC_SEQUENCE, seed=seed)


def env_batches(num_envs: int, seed: int) -> Iterator[int]:
    """The env alone: TorchRL's step_and_maybe_reset with random actions, no collector."""
    env = make_env(num_envs, seed)
    td = env.reset()
    try:
        while True:
            for _ in range(16):
                td["action"] = env.action_spec.rand()
                _, td = env.step_and_maybe_reset(td)
            yield 16 * num_envs
    finally:
        env.close()


def collector_batches(num_envs: int, seed: int, mode: str) -> Iterator[int]:
    """Random-policy collectors: one process, a 2-worker ParallelEnv, or 2 collector processes
    (the fine-tuning module's ``collector_workers: 2``: synchronous, envs side by side)."""
    options = {}
    if mode == "single":
        create = functools.partial(make_env, num_envs, seed)
    elif mode == "parallel_env":
        create = ParallelEnv(2, [functools.partial(make_env, num_envs // 2, seed + k) for k in range(2)])
    else:
        create = [functools.partial(make_env, num_envs // 2, seed + k) for k in range(2)]
        options = {"backend": "process", "num_collectors": 2, "sync": True, "cat_results": 0}
    collector = Collector(create, policy=None, frames_per_batch=num_envs * 16, total_frames=-1, **options)
    try:
        for batch in collector:
            yield batch.numel()
    finally:
        collector.shutdown()


def _descendants(pid: int) -> list[int]:
    """``pid`` and all processes below it, from Linux's /proc/<pid>/task/<tid>/children."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):  # the process ended meanwhile
                todo += [int(child) for child in children.read_text().split()]
    return found


def _cpu_seconds() -> float:
    """User + system CPU time of this process and all its worker processes so far (Linux)."""
    ticks = 0
    for pid in _descendants(os.getpid()):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; field 3 is fields[0]
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return ticks / os.sysconf("SC_CLK_TCK")


def run(seconds: float = 8.0, rounds: int = 4, num_envs: int = 8, seed: int = 0) -> dict:
    """Times every row in interleaved slices; returns steps/s per row, steps per CPU-second (all
    processes of the row, so a waiting process that spins counts) and the load averages.

    Steps per CPU-second hardly moves with the machine's load, unlike steps/s: on a shared machine
    it is the figure that tells the set-ups apart; steps/s then follows from the free cores.
    """
    torch.set_num_threads(1)
    load_start = [round(x, 2) for x in os.getloadavg()]
    streams = {
        ROWS[0]: raw_batches(num_envs, seed),
        ROWS[1]: env_batches(num_envs, seed),
        ROWS[2]: collector_batches(num_envs, seed, "single"),
        ROWS[3]: collector_batches(num_envs, seed, "parallel_env"),
        ROWS[4]: collector_batches(num_envs, seed, "collector_processes"),
    }
    steps = dict.fromkeys(streams, 0)
    elapsed = dict.fromkeys(streams, 0.0)
    cpu = dict.fromkeys(streams, 0.0)
    try:
        for batches in streams.values():
            next(batches)  # start-up (scene construction, processes, first resets) stays untimed
        slice_s = seconds / rounds
        for _ in range(rounds):
            for label, batches in streams.items():
                start, cpu_start = time.perf_counter(), _cpu_seconds()
                while time.perf_counter() - start < slice_s:
                    steps[label] += next(batches)
                elapsed[label] += time.perf_counter() - start
                cpu[label] += _cpu_seconds() - cpu_start
    finally:
        for batches in streams.values():
            batches.close()
    return {
        "num_envs": num_envs,
        "rates": {label: steps[label] / elapsed[label] for label in streams},
        "steps_per_cpu_s": {label: steps[label] / cpu[label] for label in streams},
        "versions": {package: metadata.version(package) for package in ("metaworld", "mujoco")},
        "load_average_start": load_start,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per row")
    parser.add_argument("--rounds", type=int, default=4, help="slices each row's time is cut into")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args.seconds, args.rounds, args.num_envs, args.seed)
    raw = result["rates"][RAW]
    print(f"{args.num_envs} sequences, {args.seconds:.0f} s per row in {args.rounds} rounds, random actions; "
          f"load {result['load_average_start']} → {result['load_average_end']}")  # fmt: skip
    raw_cpu = result["steps_per_cpu_s"][RAW]
    print(f"{'setup':44s} {'steps/s':>8s} {'ratio':>6s} {'steps/CPU-s':>11s} {'ratio':>6s}")
    for label, rate in result["rates"].items():
        per_cpu = result["steps_per_cpu_s"][label]
        print(f"{label:44s} {rate:8.0f} {rate / raw:6.2f} {per_cpu:11.0f} {per_cpu / raw_cpu:6.2f}")


if __name__ == "__main__":
    main()
