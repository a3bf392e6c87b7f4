"""π*'s fresh rollouts on the stages it was trained on, written in the format of its replay file, so
that episodic memory, BC's states, EWC's Fisher states and the log-likelihood set come from π*'s own
behaviour (paper App. B.3) rather than from its training replay buffer:

    python -m lit_rl.pretraining.robotic_rollouts --policy pretrained/robotic.pt \
        --frames 10000 --out pretrained/robotic.rollouts.pt

A training buffer holds what the learner did while it learnt (warm-up actions, early poor
behaviour, for the stand-in π* the scripted experts' actions); these transitions hold what π*
does now. π* acts stochastically (SAC's behaviour policy, ``ExplorationType.RANDOM``) on the
``far_tasks`` start (each FAR stage in its own episodes, drawn uniformly), through TorchRL's
``Collector``. The RoboticSequence paper preset (``configs/env/robotic_paper.yaml``) reads the file
as its ``pretraining_buffer``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tensordict import TensorDictBase
from torchrl.collectors import Collector
from torchrl.envs.utils import ExplorationType

from lit_rl.models.policy_io import atomic_torch_save, load_policy
from lit_rl.scenarios.robotic import PRETRAIN_START, RoboticSequence
from lit_rl.training.sac import TRANSITION_KEYS, SACFineTuning
from lit_rl.training.settings import Collection


def pi_star_rollouts(
    scenario: RoboticSequence, actor, frames: int, num_envs: int, seed: int
) -> TensorDictBase:
    """``frames`` transitions (rounded up to whole batches of ``num_envs`` × 250) of ``actor``
    acting stochastically from π*'s pre-training start, flat, oldest first."""
    env = scenario.make_env(num_envs, PRETRAIN_START, seed)
    collector = Collector(
        env,
        actor,
        frames_per_batch=num_envs * 250,
        total_frames=frames,
        exploration_type=ExplorationType.RANDOM,
    )
    data = torch.cat([batch.reshape(-1).select(*TRANSITION_KEYS).clone() for batch in collector])
    collector.shutdown()
    return data[:frames]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, default=Path("pretrained/robotic.pt"))
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--envs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("pretrained/robotic.rollouts.pt"))
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    scenario = RoboticSequence(pretraining_buffer=None)
    module = SACFineTuning(scenario, collection=Collection(start=PRETRAIN_START))
    load_policy(args.policy, module.exported, scenario.describe())
    started = time.monotonic()
    data = pi_star_rollouts(scenario, module.policy["actor"], args.frames, args.envs, args.seed)
    atomic_torch_save({"size": len(data), "transitions": data.to_dict()}, args.out)
    print(
        f"{len(data)} frames of π* in {time.monotonic() - started:.0f} s "
        f"({int(data['next', 'done'].sum())} episodes ended) → {args.out}"
    )


if __name__ == "__main__":
    main()
