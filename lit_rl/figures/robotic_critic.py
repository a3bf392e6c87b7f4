"""Where a fine-tuned SAC critic puts its values on π*'s own FAR transitions: a measurement of the
hypothesis docs/robotic.md states for episodic memory's forgetting (the actor climbs a critic fitted
on π*'s high-return memory, whose values away from π*'s actions nothing constrains).

    python -m lit_rl.figures.robotic_critic --rollouts runs/study/pistar.rollouts.pt \
        --pi-star runs/study/pistar_clone.pt --runs runs/robotic-fresh-em-s0 runs/robotic-fresh-none-s0

For every push-wall transition (s, a) of π*'s rollouts file (the stage whose forgetting the paper
tracks; ``--stage`` picks another) it reports, per run (its last checkpoint):
G, the discounted return π* actually collected from s (γ of the preset, per collector row;
episodes cut by the file's end are dropped); Q(s, a), the run's critic on π*'s action;
Q(s, μ_θ), on the run's own greedy action; Q(s, μ*), on π*'s greedy action; and π_θ's push-wall
success from the run's summary. The twin critics' minimum is SAC's value. Hand-written because it
reads the trainer's own modules (no library computes it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tensordict import TensorDictBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from lit_rl.models.policy_io import load_policy
from lit_rl.scenarios.robotic import PRETRAIN_START, RoboticSequence, load_transitions
from lit_rl.training.sac import SACFineTuning
from lit_rl.training.settings import Collection

#: the rollouts tool's collector rows: [batches, envs, 250 steps] flattened row-major
STEPS_PER_ROW = 250


def returns(data: TensorDictBase, envs: int, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Discounted return of every transition along its own env's stream, and whether its episode
    ended inside the file (only those returns are complete)."""
    n = len(data)
    order = torch.arange(n).reshape(-1, envs, STEPS_PER_ROW).permute(1, 0, 2).reshape(envs, -1)
    reward, done = data["next", "reward"].reshape(-1), data["next", "done"].reshape(-1)
    g, complete = torch.zeros(n), torch.zeros(n, dtype=torch.bool)
    for row in order:
        running, ended = 0.0, False
        for i in reversed(row.tolist()):
            if done[i]:
                running, ended = 0.0, True
            running = reward[i].item() + gamma * running
            g[i], complete[i] = running, ended
    return g, complete


def q_min(module: SACFineTuning, states: TensorDictBase, action: torch.Tensor) -> torch.Tensor:
    """min over the twin critics of Q(s, a) (SACLoss's stacked critic parameters)."""
    loss = module.sac_loss
    td = states.select("observation", "stage").clone().set("action", action)
    values = []
    for i in range(loss.num_qvalue_nets):
        with loss.qvalue_network_params[i].to_module(loss.qvalue_network):
            values.append(loss.qvalue_network(td.clone())["state_action_value"].reshape(-1))
    return torch.stack(values).min(0).values


def greedy(module: SACFineTuning, states: TensorDictBase) -> torch.Tensor:
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        return module.policy["actor"](states.select("observation", "stage").clone())["action"]


def fresh(scenario: RoboticSequence) -> SACFineTuning:
    return SACFineTuning(scenario, collection=Collection(start=PRETRAIN_START))


@torch.no_grad()
def measure(
    rollouts: Path, pi_star: Path, runs: list[Path], envs: int, gamma: float, stage: int
) -> list[dict]:
    scenario = RoboticSequence(pretraining_buffer=None)
    data = load_transitions(rollouts)
    g, complete = returns(data, envs, gamma)
    keep = complete & (data["stage"].reshape(-1) == stage)
    states, g = data[keep], g[keep]
    star = fresh(scenario)
    load_policy(pi_star, star.exported, scenario.describe())
    mu_star = greedy(star, states)
    rows = [_row("π* (start point)", star, states, g, mu_star, None, None)]
    for run in runs:
        module = fresh(scenario)
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        module.load_state_dict(ckpt["state_dict"], strict=False)
        summary = json.loads((run / "summary.json").read_text())
        frames = int(ckpt["state_dict"]["env_frames"])
        rows.append(_row(run.name, module, states, g, mu_star, summary, frames))
    return rows


def _row(name, module, states, g, mu_star, summary, frames) -> dict:
    last = None if summary is None else summary["eval_history"][-1]
    success = None if last is None else f"{last['push_wall']['success_rate']:.1f} @ {last['env_steps']}"
    return {
        "run": name,
        "frames": frames,
        "push_wall_success": success,
        "G": g.mean().item(),
        "Q(s,a*)": q_min(module, states, states["action"]).mean().item(),
        "Q(s,mu_theta)": q_min(module, states, greedy(module, states)).mean().item(),
        "Q(s,mu*)": q_min(module, states, mu_star).mean().item(),
        "transitions": len(states),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=Path, required=True)
    parser.add_argument("--pi-star", type=Path, required=True)
    parser.add_argument("--runs", nargs="+", type=Path, required=True)
    parser.add_argument("--envs", type=int, default=4)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--stage", type=int, default=3, help="stage index (3: push-wall)")
    args = parser.parse_args(argv)
    rows = measure(args.rollouts, args.pi_star, args.runs, args.envs, args.gamma, args.stage)
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        cells = [f"{v:.1f}" if isinstance(v, float) else str(v) for v in row.values()]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
