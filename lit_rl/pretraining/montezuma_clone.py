"""π* for Montezuma at laptop cost (issue 16.1): behavioural cloning of the explorer's Room-7
demonstrations (``lit_rl.experts.montezuma_demos``), with DAgger-style rounds, evaluated on the
paper's metric (Room-7 success from the pool's start states, sticky actions p = 0.25).

PPO + RND from Room-7 starts does not learn Room 7 at the budgets this machine allows (docs:
≤ 12.5 % success), so π* copies successful trajectories instead, as Go-Explore's robustification
learns from its explorer's demonstrations. Cloning minimises the cross-entropy to the demonstrated
action, −E_{(s,a)∼D} log π_θ(a|s), over the actor (trunk and policy head; the value heads stay at
their initialisation, fine-tuning's critic learns from scratch as after any BC pre-training). A
demonstration is deterministic and sticky actions push π* off it, so each round after the first
plays π* from the pool under sticky actions, keeps states it reached in Room 7 before succeeding,
asks the explorer for a successful continuation from each (a demonstration from where π* actually
goes, as DAgger's expert labels the learner's states) and clones again on everything.

    python -m lit_rl.pretraining.montezuma_clone --demos data/montezuma_demos --rounds 3 \
        --data-out data/montezuma_bc --out pretrained/montezuma.pt         (make montezuma-pistar)

Everything π* was cloned on (the explorer's demonstrations and the DAgger rounds') is written to
``--data-out``: π*'s pre-training data, which BC replay and EWC's Fisher read during fine-tuning.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict
from torch.nn import functional as F
from torchrl.envs.utils import ExplorationType, set_exploration_type

from lit_rl.datasets.montezuma_trajectories import FRAMES
from lit_rl.envs.montezuma_states import StartStatePool
from lit_rl.evaluation import SubspaceEvaluator
from lit_rl.experts.montezuma_demos import (
    Demonstration,
    build_demonstrations,
    load_demonstrations,
    save_demonstrations,
)
from lit_rl.models.policy_io import save_policy
from lit_rl.scenarios.montezuma import Montezuma


def clone(
    policy, frames: TensorDict, updates: int, batch_size: int = 128, lr: float = 3e-4, seed: int = 0
) -> float:
    """`updates` Adam steps of cross-entropy to the demonstrated actions; returns the last 100
    steps' mean loss."""
    actor = policy["actor"]
    params = list(policy.behaviour_parameters().values())
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    actor.train()
    for _ in range(updates):
        index = torch.randint(len(frames), (batch_size,), generator=generator)
        td = actor(TensorDict(pixels=frames["pixels"][index], batch_size=[batch_size]))
        loss = F.cross_entropy(td["logits"], frames["action"][index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses[-100:]))


@torch.no_grad()
def reached_states(
    scenario: Montezuma, actor, episodes: int, steps: int, seed: int, every: int = 8
) -> StartStatePool:
    """States π* reaches from the FAR pool under sticky actions, every `every` steps while it is
    still in its start room, alive, and has not succeeded yet (where it needs a demonstration)."""
    env = scenario.make_env(episodes, "far", seed)
    td = env.reset()
    live = np.ones(episodes, dtype=bool)
    states, rooms, entrances = [], [], []
    with set_exploration_type(ExplorationType.RANDOM):
        for step in range(steps):
            td = actor(td)
            td, next_td = env.step_and_maybe_reset(td)
            out = td["next"]
            live &= ~(out["done"].reshape(-1).numpy() | out["episode_far_success"].numpy())
            live &= out["room"].numpy() == out["start_room"].numpy()
            if step and step % every == 0:
                for i in np.flatnonzero(live):
                    state, entrance = env.snapshot(i)
                    states.append(state)
                    rooms.append(int(out["room"][i]))
                    entrances.append(entrance)
            td = next_td
            if not live.any():
                break
    env.close()
    return StartStatePool(states=states, rooms=rooms, entrance_rooms=entrances, levels=[0] * len(states))


def main(argv: Sequence[str] | None = None) -> int:
    """Clone π* on the demonstrations (with DAgger rounds), evaluate it on Room 7, export it."""
    parser = argparse.ArgumentParser(
        prog="python -m lit_rl.pretraining.montezuma_clone", description=main.__doc__
    )
    parser.add_argument("--demos", type=Path, default=Path("data/montezuma_demos"), help="explorer's")
    parser.add_argument("--data-out", type=Path, default=Path("data/montezuma_bc"), help="cloned on")
    parser.add_argument("--pool", default="pools/montezuma_room7.pt")
    parser.add_argument("--rounds", type=int, default=2, help="cloning rounds (DAgger after the first)")
    parser.add_argument("--updates", type=int, default=1500, help="Adam steps per round")
    parser.add_argument("--dagger-episodes", type=int, default=16)
    parser.add_argument("--dagger-states", type=int, default=64, help="most new start states per round")
    parser.add_argument("--eval-episodes", type=int, default=32)
    parser.add_argument("--max-episode-steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("pretrained/montezuma.pt"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    scenario = Montezuma(pool=args.pool, max_episode_steps=args.max_episode_steps)
    policy = scenario.make_policy().modules()
    demos = load_demonstrations(args.demos)
    meta = json.loads((args.demos / "meta.json").read_text())
    save_demonstrations(demos, args.data_out, {**meta, "dagger_rounds": 0})
    evaluator = SubspaceEvaluator(args.eval_episodes, seed=10_000)
    log = {"rounds": []}
    started = time.perf_counter()
    for round_ in range(args.rounds):
        t0 = time.perf_counter()
        if round_:
            reached = reached_states(scenario, policy["actor"], args.dagger_episodes, args.max_episode_steps,
                                     seed=args.seed + 100 * round_)  # fmt: skip
            pick = np.random.default_rng(round_).permutation(len(reached))[: args.dagger_states]
            reached = StartStatePool(
                [reached.states[i] for i in pick], [reached.rooms[i] for i in pick],
                [reached.entrance_rooms[i] for i in pick], [0] * len(pick),
            )  # fmt: skip
            new: list[Demonstration] = build_demonstrations(reached, 1, seed=args.seed + round_)
            demos = demos + new
            save_demonstrations(demos, args.data_out, {**meta, "dagger_rounds": round_})
        t1 = time.perf_counter()
        frames = TensorDict.load_memmap(args.data_out / FRAMES).to_tensordict()
        loss = clone(policy, frames, args.updates, seed=args.seed + round_)
        t2 = time.perf_counter()
        metrics = evaluator.evaluate(scenario, policy["actor"], "far")
        t3 = time.perf_counter()
        seconds = {"demonstrations": t1 - t0, "cloning": t2 - t1, "evaluation": t3 - t2}
        entry = {"round": round_, "demonstrations": len(demos), "frames": len(frames), "loss": loss,
                 "far": metrics, "seconds": {k: round(v, 1) for k, v in seconds.items()}}  # fmt: skip
        log["rounds"].append(entry)
        print(json.dumps(entry), flush=True)
    save_policy(args.out, policy, scenario.describe())
    log["seconds"] = round(time.perf_counter() - started, 1)
    args.out.with_suffix(".clone.json").write_text(json.dumps(log, indent=2))
    print(f"π*: {args.out}; Room-7 success {log['rounds'][-1]['far']['success_rate']:.3f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
