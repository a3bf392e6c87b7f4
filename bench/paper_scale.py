"""Per-frame cost of the paper's ScaledNet (32.9M parameters) on this machine's CPU, one thread.

Measures the two passes a fine-tuning frame costs after issue 14 (docs/throughput.md):

- inference: the collection pass (encoders + one LSTM step + heads, writing the value and the
  fixed features) on a flat batch of ``--envs`` frames, under ``no_grad``;
- learner: the PPO pass on [rows, T] sequences that carry those features (fused LSTM + heads) plus
  its backward through the LSTM and heads (encoders frozen, as in the paper's fine-tuning);
- learner without carried features (encoders re-run, still frozen), for comparison.

    python -m bench.paper_scale --envs 32 --rows 4 --steps 32
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


def _time(fn, repeat: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def run(envs: int = 32, rows: int = 4, steps: int = 32, repeat: int = 3, size: str = "paper") -> dict:
    from lit_rl.models.nethack_policy import FEATURES_KEY
    from lit_rl.scenarios.nethack import NetHack

    torch.set_num_threads(1)
    torch.manual_seed(0)
    scenario = NetHack(size=size)
    policy = scenario.make_policy().modules()
    actor = policy["actor"].train()
    logits_module = actor.module[0]
    env = scenario.make_env(envs, "close", seed=0, training=True)
    td = env.reset()
    with torch.no_grad():
        rollout = env.rollout(steps, actor, break_when_any_done=False)  # [envs, steps]
    env.close()

    def inference():
        with torch.no_grad():
            actor(td.clone())

    sequences = rollout[:rows].clone()
    assert FEATURES_KEY in sequences.keys()
    params = [p for p in policy.parameters() if p.requires_grad]

    def learner(batch):
        def step():
            logits = logits_module(batch.clone())
            loss = logits["logits"].logsumexp(-1).mean() + logits_module.net.value(logits["core"]).mean()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            del grads

        return step

    per_inference = _time(inference, repeat) / envs
    per_learner = _time(learner(sequences), repeat) / (rows * steps)
    per_learner_encoding = _time(learner(sequences.exclude(FEATURES_KEY)), repeat) / (rows * steps)
    return {
        "size": size,
        "parameters": sum(p.numel() for p in policy.parameters()),
        "trainable_parameters": sum(p.numel() for p in params),
        "inference_ms_per_frame": 1000 * per_inference,
        "learner_ms_per_frame": 1000 * per_learner,
        "learner_ms_per_frame_encoders_rerun": 1000 * per_learner_encoding,
        "envs": envs,
        "rows": rows,
        "steps": steps,
        "load_average": os.getloadavg(),
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=32)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", default="paper")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.envs, args.rows, args.steps, args.repeat, args.size)))


if __name__ == "__main__":
    main()
