"""A stand-in π* for RoboticSequence when SAC cannot be trained to success on this machine: the SAC
actor (`SACFineTuning`'s networks) cloned by maximum likelihood from Meta-World's noisy scripted
experts on the last two stages, exported in π*'s format (policy file + replay transitions file).

    python -m lit_rl.pretraining.robotic_clone --frames 20000 --updates 4000 \
        --out runs/robotic-work/pistar_clone.pt

Not the paper's π* (SAC trained to 100 %): the "replay buffer" is the experts' transitions it was
cloned from, and the critics stay at their initialisation unless ``--critic-updates`` > 0, which
then trains the twin critics by SAC's critic loss on those transitions with the cloned actor and α
frozen (policy evaluation of the clone, as the paper's critic warm-up does for NetHack), so
fine-tuning starts from critics that score π*'s behaviour. docs/robotic.md says where each variant
was used and what it reaches.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torchrl.collectors import Collector

from lit_rl.evaluation import SubspaceEvaluator
from lit_rl.models.policy_io import atomic_torch_save, save_policy
from lit_rl.scenarios import RoboticSequence
from lit_rl.training.sac import SACFineTuning, _loglik, exported_buffer_path
from lit_rl.training.settings import Collection


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--updates", type=int, default=4_000)
    parser.add_argument("--noise", type=float, default=0.3)
    parser.add_argument("--critic-updates", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("pretrained/robotic.pt"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    scenario = RoboticSequence(pretraining_buffer=None)
    module = SACFineTuning(scenario, collection=Collection(start="far_tasks"))
    env = scenario.make_env(4, "far_tasks", args.seed, training=True)
    started = time.monotonic()
    collector = Collector(
        env, scenario.scripted_policy(args.noise, args.seed), frames_per_batch=1000, total_frames=args.frames
    )
    data = torch.cat([batch.reshape(-1) for batch in collector])
    collector.shutdown()
    episodes, wins = int(data["next", "done"].sum()), int(data["next", "success"].sum())
    print(
        f"{len(data)} expert frames in {time.monotonic() - started:.0f} s; {wins}/{episodes} episodes solved"
    )
    optimizer = torch.optim.Adam(module.policy["actor"].parameters(), lr=1e-3)
    started = time.monotonic()
    for _ in range(args.updates):
        batch = data[torch.randint(len(data), (128,))]
        loss = -_loglik(module.policy["actor"], batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"{args.updates} cloning updates in {time.monotonic() - started:.0f} s, last NLL {loss.item():.2f}")
    if args.critic_updates:
        warm_up_critics(module, data, args.critic_updates)
    evaluation = SubspaceEvaluator(10, 10_000, True).evaluate_all(scenario, module.policy["actor"])
    print({k: round(v["success_rate"], 2) for k, v in evaluation.items()}, evaluation["far"])
    save_policy(args.out, module.exported, scenario.describe())
    keys = ("observation", "stage", "action", ("next", "observation"), ("next", "stage"), ("next", "reward"),
            ("next", "done"), ("next", "terminated"))  # fmt: skip
    atomic_torch_save(
        {"size": len(data), "transitions": data.select(*keys).clone().to_dict()},
        exported_buffer_path(args.out),
    )
    print(args.out, exported_buffer_path(args.out))


def warm_up_critics(module: SACFineTuning, data, updates: int) -> None:
    """SAC's critic loss on ``data`` with the actor and α frozen: the twin Q-networks learn the soft
    Q^π of the cloned actor (Bellman targets from the target critics, which follow by Polyak
    averaging). α stays at its initial value: with the actor frozen its loss cannot reach the
    target entropy (measured: α grew from 1 to 38 in 4,000 updates), and fine-tuning then starts
    with the α it would have had without the warm-up."""
    actor = module.policy["actor"]
    actor.requires_grad_(False)
    optimizer = torch.optim.Adam(list(module.sac_loss.qvalue_network_params.values(True, True)), lr=1e-3)
    started = time.monotonic()
    for _ in range(updates):
        out = module.sac_loss(data[torch.randint(len(data), (128,))])
        loss = out["loss_qvalue"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        module.target_update.step()
    actor.requires_grad_(True)
    print(
        f"{updates} critic warm-up updates in {time.monotonic() - started:.0f} s, "
        f"last Q loss {out['loss_qvalue'].item():.3f}, α {out['alpha'].item():.3f}"
    )


if __name__ == "__main__":
    main()
