"""π* trajectories for Montezuma's BC replay (paper section 4: ">500 trajectories of a PPO+RND agent").

`record` plays the exported π* from the FAR start pool (Room 7) and writes every frame it saw, with
its action, room and episode index, as a memory-mapped TensorDict folder; `load_trajectory_buffer`
reopens it (``lit_rl.datasets.montezuma_trajectories``) as the replay buffer BC samples
(``model.scenario.init_args.pretraining_data: <folder>``).
Command line::

    python -m lit_rl.recording.montezuma_bc --policy pretrained/montezuma.pt \
        --pool pools/montezuma_room7.pt --episodes 16 --out data/montezuma_bc
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from lit_rl.datasets.montezuma_trajectories import FRAMES, KEYS, META
from lit_rl.models.policy_io import load_policy
from lit_rl.scenarios.montezuma import Montezuma


@torch.no_grad()
def record(
    scenario: Montezuma,
    policy_path: str | Path | None,
    episodes: int,
    out: str | Path,
    *,
    num_envs: int = 8,
    seed: int = 0,
) -> TensorDict:
    """Play ``episodes`` full episodes of π* from the scenario's FAR pool; save them to ``out``.

    Episodes run in lock-step batches of ``num_envs`` (each env plays exactly one episode per
    batch, frames after its end are dropped). ``policy_path`` None records the untrained policy,
    for tests only.
    """
    policy = scenario.make_policy().modules()
    if policy_path is not None:
        load_policy(policy_path, policy, scenario.describe())
    actor = policy["actor"].eval()
    chunks, returns, successes = [], [], []
    started = time.perf_counter()
    frames = 0
    for first in range(0, episodes, num_envs):
        n = min(num_envs, episodes - first)
        env = scenario.make_env(n, scenario.pretraining_subspace, seed + first)
        with set_exploration_type(ExplorationType.RANDOM):
            rollout = env.rollout(scenario.max_episode_steps, actor, break_when_all_done=True)
        env.close()
        ended = rollout["next", "done"].squeeze(-1).cumsum(-1)
        alive = (ended == 0) | (rollout["next", "done"].squeeze(-1) & (ended == 1))
        steps = torch.arange(rollout.shape[1]).expand(n, -1)
        rollout.set("episode", (torch.arange(n) + first).unsqueeze(-1).expand(n, rollout.shape[1]))
        rollout.set("step", steps)
        chunks.append(rollout.select(*KEYS)[alive].clone())
        last = rollout["next"][torch.arange(n), alive.sum(-1) - 1]
        returns += last["episode_return"].tolist()
        successes += last["episode_far_success"].tolist()
        frames += int(alive.sum())
    data = torch.cat(chunks)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data.memmap(out / FRAMES)
    meta = {
        "policy": str(policy_path),
        "pool": scenario.pool_path,
        "episodes": episodes,
        "frames": frames,
        "return_mean": sum(returns) / len(returns),
        "far_success_rate": sum(successes) / len(successes),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / META).write_text(json.dumps(meta, indent=2))
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """Record π*'s episodes from the Room-7 pool for BC replay."""
    parser = argparse.ArgumentParser(prog="python -m lit_rl.recording.montezuma_bc", description=main.__doc__)
    parser.add_argument("--policy", default="pretrained/montezuma.pt", help="exported π*")
    parser.add_argument("--pool", default="pools/montezuma_room7.pt", help="FAR start states")
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--max-episode-steps", type=int, default=500)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("data/montezuma_bc"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    scenario = Montezuma(pool=args.pool, max_episode_steps=args.max_episode_steps)
    record(scenario, args.policy, args.episodes, args.out, num_envs=args.num_envs, seed=args.seed)
    print(json.dumps(json.loads((args.out / META).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
