"""Montezuma PPO + RND training frames/s beside ale-py's vector env collection, in the same run.

The laptop preset's learner (8 envs × 128 steps, 4 epochs × 4 minibatches of 256, the paper's RND
network) trains ``RNDFineTuning`` from the game start (no pool needed) with Lightning, no
evaluation and no checkpoints, once with the envs stepped in the learner process (there the
trunk passes per frame are counted: 1 collection pass, 1 per PPO epoch, plus the bootstrap of
each row's last next-state and of ended episodes) and once with the preset's 2 collector
processes. ale-py's ``AtariVectorEnv`` with the same 8 envs and random actions (the collection
ceiling: no policy, no learning) is timed before, between and after the runs, so a load change
hits both sides. Each training rate counts frames after the first batch (start-up and the
observation warm-up excluded).

    python bench/montezuma_training.py --frames 3072
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.montezuma_collection import raw_vector_batches
from lit_rl.training.ppo import Advantage, Optimisation, PPOLoss
from lit_rl.training.settings import Budget, Collection, Evaluation


def raw_collection(seconds: float, num_envs: int) -> float:
    """Agent steps/s of ale-py's vector env over `seconds` (random actions)."""
    batches = raw_vector_batches(num_envs, seed=0)
    try:
        next(batches)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            steps += next(batches)
        return steps / (time.perf_counter() - start)
    finally:
        batches.close()


def train(frames: int, num_envs: int, workers: int) -> dict:
    """One training run; frames/s after the first batch and, in-process, trunk passes per frame."""
    from lightning import Callback, Trainer

    from lit_rl.models.atari_cnn import PixelTrunk
    from lit_rl.scenarios.montezuma import Montezuma
    from lit_rl.training.rnd import RNDFineTuning

    torch.manual_seed(0)
    model = RNDFineTuning(
        Montezuma(max_episode_steps=500),
        budget=Budget(frames=frames),
        collection=Collection(num_envs=num_envs, rollout_length=128, workers=workers),
        optimisation=Optimisation(minibatch_size=256, epochs=4, lr=1e-4, max_grad_norm=0.5),
        advantage=Advantage(gamma=0.999, gae_lambda=0.95),
        loss=PPOLoss(clip_epsilon=0.1, critic_coef=1.0, entropy_coef=0.001),
        evaluation=Evaluation(every_frames=10**12),
    )
    trunk_frames = [0]
    original = PixelTrunk.forward

    def counted(self, pixels):
        trunk_frames[0] += pixels.shape[:-3].numel()
        return original(self, pixels)

    class Stopwatch(Callback):
        def __init__(self):
            self.marks: list[tuple[float, int]] = []  # this run's own (a class list was shared by both runs)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.marks.append((time.perf_counter(), int(pl_module.env_frames)))

    stopwatch = Stopwatch()
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[stopwatch],
                      default_root_dir=tempfile.mkdtemp(prefix="bench-montezuma-"))  # fmt: skip
    PixelTrunk.forward = counted
    try:
        trainer.fit(model)
    finally:
        PixelTrunk.forward = original
    (t0, f0), (t1, f1) = stopwatch.marks[0], stopwatch.marks[-1]
    result = {"workers": workers, "frames": f1, "timed_frames": f1 - f0, "seconds": t1 - t0,
              "frames_per_s": (f1 - f0) / (t1 - t0)}  # fmt: skip
    if workers == 1:  # the collection pass runs here only then (warm-up frames are not trunk passes)
        result["trunk_passes_per_frame"] = trunk_frames[0] / f1
    return result


def run(frames: int = 3072, num_envs: int = 8, raw_seconds: float = 8.0) -> dict:
    """Raw collection, training in-process, raw, training with 2 workers, raw; load before each."""
    torch.set_num_threads(1)
    raw, runs, loads = [], {}, []
    for step in ("raw", "in-process", "raw", "2 workers", "raw"):
        loads.append(round(os.getloadavg()[0], 2))
        if step == "raw":
            raw.append(raw_collection(raw_seconds, num_envs))
        else:
            runs[step] = train(frames, num_envs, 1 if step == "in-process" else 2)
    return {
        "num_envs": num_envs,
        "raw_steps_per_s": float(np.mean(raw)),
        "raw_steps_per_s_each": raw,
        "runs": runs,
        "load_average_before_each_step": loads,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3072)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--raw-seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.frames, args.num_envs, args.raw_seconds), indent=2))


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parents[1])
    main()
