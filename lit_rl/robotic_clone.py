"""A stand-in π* for RoboticSequence when SAC cannot be trained to success on this machine: the SAC
actor (`SACFineTuning`'s networks) cloned by maximum likelihood from Meta-World's noisy scripted
experts on the last two stages, exported in π*'s format (policy file + replay transitions file).

    python -m lit_rl.robotic_clone --frames 20000 --updates 4000 --out runs/robotic-work/pistar_clone.pt

Not the paper's π* (SAC trained to 100 %): the critics are left at their initialisation and the
"replay buffer" is the experts' transitions it was cloned from. docs/robotic.md says where it was
used and what it reaches.
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
from lit_rl.training.sac_finetune import SACFineTuning, _loglik, exported_buffer_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--updates", type=int, default=4_000)
    parser.add_argument("--noise", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("pretrained/robotic.pt"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    scenario = RoboticSequence(pretraining_buffer=None)
    module = SACFineTuning(scenario, train_start="far_tasks")
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


if __name__ == "__main__":
    main()
