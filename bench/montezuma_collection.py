"""Montezuma collection throughput: raw ale-py `AtariVectorEnv` against `MontezumaEnv` + TorchRL.

All rows use the paper's settings (sticky 0.25, frame skip 4 with max-pooling, 84×84 grey ×4, no
reward clipping, no no-op starts) and uniformly random actions; a step is one agent step of 4
emulator frames, summed over envs. The target is ratio ≥ 0.7 for `MontezumaEnv` under a Collector.
Rows take turns in short slices over several rounds, so a load change on a shared machine hits every
row alike instead of skewing the ratio. Load still moves the ale back-end's ratio: the raw row
emulates on one C++ thread per core, the ale back-end on one Python thread (ALE holds the GIL while
it emulates, so threads do not help), so the ratio is highest when other work keeps the second core
busy and lowest on an idle machine.

    python bench/montezuma_collection.py --seconds 20 --num-envs 16
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import numpy as np
import torch
from torchrl.collectors import Collector

from lit_rl.envs.montezuma import MontezumaEnv, make_vector_env

RAW = "ale-py AtariVectorEnv (raw, C++ threads)"


def raw_vector_batches(num_envs: int, seed: int) -> Iterator[int]:
    """Steps ale-py's vector env directly; yields the env steps done per call."""
    env = make_vector_env(num_envs)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    n_actions = int(env.single_action_space.n)
    try:
        while True:
            env.step(rng.integers(0, n_actions, num_envs))
            yield num_envs
    finally:
        env.close()


def collector_batches(num_envs: int, seed: int, backend: str, workers: int) -> Iterator[int]:
    """Random-policy `Collector` over `MontezumaEnv`; `workers` > 1 runs collector processes the
    way fine-tuning does with ``model.collection.workers`` (synchronous, envs side by side)."""

    def make_env() -> MontezumaEnv:
        torch.set_num_threads(1)
        return MontezumaEnv(num_envs // workers, backend=backend, seed=seed)

    options = {}
    if workers > 1:
        options = {"backend": "process", "num_collectors": workers, "sync": True, "cat_results": 0}
    collector = Collector(
        make_env if workers == 1 else [make_env] * workers,
        policy=None,
        frames_per_batch=num_envs * 16,
        total_frames=-1,
        **options,
    )
    try:
        for batch in collector:
            yield batch.numel()
    finally:
        collector.shutdown()


def run(seconds: float = 20.0, rounds: int = 4, num_envs: int = 16, seed: int = 0) -> dict:
    """Times every row in interleaved slices; returns agent steps/s per row label."""
    n = num_envs
    rows = {
        RAW: raw_vector_batches(n, seed),
        "MontezumaEnv ale + Collector": collector_batches(n, seed, "ale", 1),
        "MontezumaEnv ale + Collector, 2 workers": collector_batches(n, seed, "ale", 2),
        "MontezumaEnv vector + Collector": collector_batches(n, seed, "vector", 1),
    }
    steps = dict.fromkeys(rows, 0)
    elapsed = dict.fromkeys(rows, 0.0)
    try:
        for batches in rows.values():
            next(batches)  # start-up (processes, first resets) stays out of the timing
        slice_s = seconds / rounds
        for _ in range(rounds):
            for label, batches in rows.items():
                start = time.perf_counter()
                while time.perf_counter() - start < slice_s:
                    steps[label] += next(batches)
                elapsed[label] += time.perf_counter() - start
    finally:
        for batches in rows.values():
            batches.close()
    return {label: steps[label] / elapsed[label] for label in rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per row")
    parser.add_argument("--rounds", type=int, default=4, help="slices each row's time is cut into")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    n = args.num_envs
    rates = run(args.seconds, args.rounds, n, args.seed)
    raw = rates[RAW]
    print(f"{n} envs, {args.seconds:.0f} s per row in {args.rounds} rounds, random actions")
    print(f"{'setup':44s} {'steps/s':>8s} {'frames/s':>9s} {'ratio':>6s}")
    for label, rate in rates.items():
        print(f"{label:44s} {rate:8.0f} {rate * 4:9.0f} {rate / raw:6.2f}")


if __name__ == "__main__":
    main()
