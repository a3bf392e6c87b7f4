"""AppleRetrieval stepping throughput: the batched TorchRL env against plain-Python baselines.

A corridor step is one step of one corridor, summed over the batch. Every row plays uniformly random
actions drawn ahead of time (a bank of action batches cycled through), so the numbers measure the
environment, not the random number generator. Episodes reset as they end in every row.

    python -m bench.apple_collection --seconds 3 --num-envs 4096
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import gymnasium
import numpy as np
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector

from lit_rl.envs.apple import (
    EPISODE_CAP,
    PHASE_TO_APPLE,
    AppleRetrievalEnv,
    apple_step,
)

LENGTH = 30
BANK = 64  # pre-drawn action batches, cycled


def _rate(step: Callable[[], int], seconds: float) -> float:
    """Corridor steps/s of ``step`` (returns the steps it did) over ``seconds``, after one warm-up."""
    step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        steps += step()
    return steps / (time.perf_counter() - start)


def torchrl_env(seconds: float, num_envs: int) -> float:
    """``AppleRetrievalEnv.step_and_maybe_reset``: TorchRL's public stepping path with resets."""
    env = AppleRetrievalEnv(num_envs, length=LENGTH)
    actions = torch.randint(0, 2, (BANK, num_envs))
    state = {"td": env.reset(), "i": 0}

    def step() -> int:
        td = state["td"]
        td["action"] = actions[state["i"] % BANK]
        state["i"] += 1
        _, state["td"] = env.step_and_maybe_reset(td)
        return num_envs

    return _rate(step, seconds)


def torchrl_dynamics(seconds: float, num_envs: int) -> float:
    """The env's own ``_step`` and masked ``_reset`` without TorchRL's spec checks and key moves."""
    env = AppleRetrievalEnv(num_envs, length=LENGTH)
    env.reset()
    actions = torch.randint(0, 2, (BANK, num_envs))
    state = {"i": 0}

    def step() -> int:
        td = TensorDict(action=actions[state["i"] % BANK], batch_size=[num_envs])
        state["i"] += 1
        out = env._step(td)
        done = out["done"].reshape(-1)
        if done.any():
            env._reset(TensorDict(_reset=done, batch_size=[num_envs]))
        return num_envs

    return _rate(step, seconds)


def numpy_loop(seconds: float, num_envs: int) -> float:
    """Baseline: ``apple_step`` on numpy arrays in a Python loop, with the same observations,
    truncation and resets, and none of TorchRL's containers."""
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, (BANK, num_envs))
    x = np.zeros(num_envs, dtype=np.int64)
    phase = np.full(num_envs, PHASE_TO_APPLE, dtype=np.int64)
    t = np.zeros(num_envs, dtype=np.int64)
    state = {"x": x, "phase": phase, "t": t, "i": 0}

    def step() -> int:
        x, phase, reward, home = apple_step(state["x"], state["phase"], actions[state["i"] % BANK], LENGTH)
        state["i"] += 1
        t = state["t"] + 1
        truncated = (t >= EPISODE_CAP) & ~home
        done = home | truncated
        sign = (phase * 2 - 3).astype(np.float32)
        _obs = np.stack([sign * 0.1, x / LENGTH, t / EPISODE_CAP], -1)  # what the env emits
        x[done], phase[done], t[done] = 0, PHASE_TO_APPLE, 0
        state.update(x=x, phase=phase, t=t)
        return num_envs

    return _rate(step, seconds)


def gym_single(seconds: float) -> float:
    """Baseline: the gymnasium ``lit_rl/AppleRetrieval-v0`` env, one corridor, in a Python loop."""
    env = gymnasium.make("lit_rl/AppleRetrieval-v0", length=LENGTH)
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, 2, 1000).tolist()

    def step() -> int:
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        return len(actions)

    return _rate(step, seconds)


def collector(seconds: float, num_envs: int, rollout: int = 100) -> float:
    """``AppleRetrievalEnv`` under a TorchRL ``Collector`` with a random policy (``policy=None``)."""
    env = AppleRetrievalEnv(num_envs, length=LENGTH)
    stream = Collector(env, None, frames_per_batch=num_envs * rollout, total_frames=-1)
    batches = iter(stream)
    try:
        return _rate(lambda: next(batches).numel(), seconds)
    finally:
        stream.shutdown()


def run(seconds: float = 3.0, num_envs: int = 4096) -> dict:
    """Corridor steps/s of every row and the ratios against the baselines."""
    torch.set_num_threads(1)
    result = {
        "num_envs": num_envs,
        "torchrl_env": torchrl_env(seconds, num_envs),
        "torchrl_dynamics": torchrl_dynamics(seconds, num_envs),
        "collector": collector(seconds, num_envs),
        "numpy_loop": numpy_loop(seconds, num_envs),
        "gym_single": gym_single(seconds),
    }
    result["env_over_numpy"] = result["torchrl_env"] / result["numpy_loop"]
    result["env_over_gym"] = result["torchrl_env"] / result["gym_single"]
    result["collector_over_numpy"] = result["collector"] / result["numpy_loop"]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per row")
    parser.add_argument("--num-envs", type=int, default=4096)
    args = parser.parse_args(argv)
    result = run(args.seconds, args.num_envs)
    for key, value in result.items():
        print(f"{key:>22}: {value:14,.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
