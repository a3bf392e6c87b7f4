"""NetHack collection throughput: raw NLE vs TorchRL GymEnv vs NetHackBatchEnv under collectors.

Every contender plays uniformly random actions over the full 121-key action set (random keys in
NetHack are cheap or dear depending on which menus they open, so the set must match) and keeps
the terminal observations the model reads. Numbers are env steps per second of wall time.

    python bench/nethack_collection.py --seconds 5
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable, Iterator

import gymnasium as gym
import nle  # noqa: F401  (registers the NetHack gymnasium envs)
import numpy as np
import torch
from nle import nethack
from torchrl.collectors import Collector, MultiSyncCollector
from torchrl.envs import GymEnv

from lit_rl.envs.nethack import NetHackBatchEnv

GYM_ID = "NetHackScore-v0"
GYM_KWARGS = dict(
    actions=nethack.ACTIONS,
    character="mon-hum-neu-mal",
    observation_keys=("tty_chars", "tty_colors", "tty_cursor", "blstats"),
)


def _rate(batches: Iterator[int], seconds: float) -> float:
    """Steps/s over ``seconds`` of a stream yielding step counts; the first item is warm-up."""
    next(batches)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        steps += next(batches)
    return steps / (time.perf_counter() - start)


def raw_nle(seconds: float) -> float:
    """The stock gymnasium NLE env stepped in a bare Python loop: the floor every wrapper pays."""
    env = gym.make(GYM_ID, **GYM_KWARGS)
    rng = np.random.default_rng(0)
    env.reset(seed=0)

    def steps() -> Iterator[int]:
        while True:
            for action in rng.integers(len(nethack.ACTIONS), size=1000).tolist():
                _, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    env.reset()
            yield 1000

    try:
        with warnings.catch_warnings():  # NLE warns when a random agent's quit is not "smooth"
            warnings.simplefilter("ignore", UserWarning)
            return _rate(steps(), seconds)
    finally:
        env.close()


def _collector_rate(collector, seconds: float) -> float:
    def steps() -> Iterator[int]:
        for batch in collector:
            yield batch.numel()

    try:
        return _rate(steps(), seconds)
    finally:
        collector.shutdown()


def torchrl_gym_env(seconds: float) -> float:
    """TorchRL's stock ``GymEnv`` around the same env, one game, under a ``Collector``."""
    env = GymEnv(GYM_ID, categorical_action_encoding=True, **GYM_KWARGS)
    return _collector_rate(Collector(env, None, frames_per_batch=256, total_frames=-1), seconds)


def _batch_env_factory(num_games: int, seed: int) -> Callable[[], NetHackBatchEnv]:
    def make() -> NetHackBatchEnv:
        torch.set_num_threads(1)  # env workers must not fight over the two cores
        return NetHackBatchEnv(num_games, seed=seed)

    return make


def batch_env(seconds: float, num_games: int, rollout: int) -> float:
    """NetHackBatchEnv under a single-process ``Collector`` with a random policy."""
    env = _batch_env_factory(num_games, seed=0)()
    collector = Collector(env, None, frames_per_batch=num_games * rollout, total_frames=-1)
    return _collector_rate(collector, seconds)


def batch_env_workers(seconds: float, num_games: int, rollout: int, workers: int) -> float:
    """NetHackBatchEnv in ``workers`` processes under a ``MultiSyncCollector``."""
    factories = [_batch_env_factory(num_games, seed=w) for w in range(workers)]
    collector = MultiSyncCollector(
        factories, None, frames_per_batch=workers * num_games * rollout, total_frames=-1
    )
    return _collector_rate(collector, seconds)


def run(seconds: float = 5.0, num_games: int = 64, rollout: int = 32, workers: int = 2) -> dict:
    """Measures all contenders one after another and returns steps/s and the ratios."""
    torch.set_num_threads(1)
    result = {
        "raw_nle": raw_nle(seconds),
        "torchrl_gym_env": torchrl_gym_env(seconds),
        "batch_env_collector": batch_env(seconds, num_games, rollout),
        f"batch_env_{workers}_workers": batch_env_workers(seconds, num_games, rollout, workers),
    }
    result["collection_over_raw"] = result["batch_env_collector"] / result["raw_nle"]
    result["collection_over_gym_env"] = result["batch_env_collector"] / result["torchrl_gym_env"]
    result[f"{workers}_workers_over_raw"] = result[f"batch_env_{workers}_workers"] / result["raw_nle"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per contender")
    parser.add_argument("--num-games", type=int, default=64, help="games per NetHackBatchEnv")
    parser.add_argument("--rollout", type=int, default=32, help="steps per game per batch")
    parser.add_argument("--workers", type=int, default=2, help="processes for the multi collector")
    args = parser.parse_args()
    result = run(args.seconds, args.num_games, args.rollout, args.workers)
    for key, value in result.items():
        unit = "x" if "_over_" in key else " steps/s"
        print(f"{key:>28}: {value:10.2f}{unit}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
