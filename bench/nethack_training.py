"""NetHack fine-tuning throughput of one trainer configuration, runnable against any lit_rl tree.

``python bench/nethack_training.py --tree DIR --method none|ks --collection sync|async
[--advantage gae|vtrace] ...`` puts
``DIR`` first on ``sys.path`` (so the same script times this tree and an older commit checked out in
a worktree, side by side), builds the NetHack scenario with the tiny ScaledNet (encoders frozen),
exports a randomly initialised π* (throughput does not depend on what it learned), and trains
``PPOFineTuning`` for ``--frames`` frames with Lightning, no evaluation and no checkpoints. It
prints one JSON object:

- ``frames_per_s``: frames over the wall time after the first batch (start-up excluded),
- ``split_s`` of the learner process: ``learning`` (``training_step``), ``env`` and ``inference``
  (environment steps and the collection policy's forward, when they run in this process) and
  ``waiting`` (the rest of fetching a batch: collector bookkeeping, or waiting for a collector
  process),
- ``passes_per_frame`` (ScaledNet LSTM-core frames per env frame, ``encoder_per_frame`` the frames
  whose encoders ran), counted in this process (so only for in-process collection),
- ``policy_lag`` (mean and max of the logged ``time/policy_lag``), where the tree logs it,
- ``collection_only_frames_per_s`` with ``--ceiling``: the same envs and collection policy under an
  in-process ``Collector``, no learning (the upper bound).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

TIMINGS: dict[str, float] = defaultdict(float)


def _timed(owner, name: str, phase: str, when=None) -> None:
    original = getattr(owner, name)
    active = {"depth": 0}

    def wrapper(*args, **kwargs):
        if active["depth"] or (when is not None and not when(*args)):
            return original(*args, **kwargs)
        active["depth"] += 1
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            TIMINGS[phase] += time.perf_counter() - start
            active["depth"] -= 1

    setattr(owner, name, wrapper)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--method", choices=["none", "ks"], default="none")
    parser.add_argument("--collection", choices=["sync", "async"], default="sync")
    parser.add_argument("--advantage", choices=["gae", "vtrace"], default="gae")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--frames", type=int, default=8192)
    parser.add_argument("--num-envs", type=int, default=32)
    parser.add_argument("--rollout", type=int, default=32)
    parser.add_argument("--minibatch", type=int, default=128)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--ceiling", action="store_true", help="also time collection alone")
    args = parser.parse_args(argv)
    sys.path.insert(0, args.tree)

    import torch
    from lightning import Callback, Trainer

    torch.set_num_threads(1)
    from torchrl.envs import EnvBase

    from lit_rl.models import nethack_policy
    from lit_rl.retention import Kickstarting
    from lit_rl.scenarios.nethack import NetHack
    from lit_rl.training.ppo import PPOFineTuning

    try:
        from lit_rl.models.policy_io import save_policy
    except ImportError:  # older trees
        from lit_rl.training.policy_io import save_policy

    torch.manual_seed(0)
    scenario = NetHack(size=args.size, max_episode_steps=500)
    workdir = Path(tempfile.mkdtemp(prefix="bench-nethack-"))
    teacher = workdir / "pi.pt"
    save_policy(teacher, scenario.make_policy().modules(), scenario.describe())
    from lit_rl.training.ppo import Advantage, Optimisation, PPOLoss
    from lit_rl.training.settings import Budget, Collection, Evaluation

    retention = [Kickstarting()] if args.method == "ks" else []
    model = PPOFineTuning(
        scenario,
        pretrained=str(teacher),
        retention=retention,
        budget=Budget(frames=args.frames),
        collection=Collection(
            num_envs=args.num_envs, rollout_length=args.rollout, workers=args.workers, mode=args.collection
        ),
        optimisation=Optimisation(minibatch_size=args.minibatch, lr=1e-4, lr_decay=True, max_grad_norm=4.0),
        advantage=Advantage(estimator=args.advantage, gamma=0.999999, gae_lambda=1.0),
        loss=PPOLoss(
            clip_epsilon=0.1, value_clip=1.0, normalize_returns=True, critic_coef=1.0, entropy_coef=0.001
        ),
        evaluation=Evaluation(every_frames=10**12),
    )

    _timed(PPOFineTuning, "training_step", "learning")
    _timed(EnvBase, "step_and_maybe_reset", "env")
    _timed(EnvBase, "reset", "env")
    _timed(nethack_policy.RecurrentLogits, "forward", "inference", when=lambda self, td: td.ndim == 1)
    original_loader = PPOFineTuning.train_dataloader

    def timed_loader(module):
        iterator = original_loader(module)
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            finally:
                TIMINGS["fetch"] += time.perf_counter() - start
            yield batch

    PPOFineTuning.train_dataloader = timed_loader

    class Stopwatch(Callback):
        def __init__(self):
            self.marks: list[tuple[float, int, dict]] = []
            self.lags: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.marks.append((time.perf_counter(), int(pl_module.env_frames), dict(TIMINGS)))
            lag = trainer.callback_metrics.get("time/policy_lag")
            if lag is not None:
                self.lags.append(float(lag))

    stopwatch = Stopwatch()
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[stopwatch],
                      default_root_dir=str(workdir))  # fmt: skip
    counter = getattr(nethack_policy, "PassCounter", None)
    if counter is not None:
        with counter() as passes:
            trainer.fit(model)
    else:
        passes = None
        trainer.fit(model)
    (t0, f0, s0), (t1, f1, s1) = stopwatch.marks[0], stopwatch.marks[-1]
    seconds = t1 - t0
    split = {k: s1.get(k, 0.0) - s0.get(k, 0.0) for k in ("learning", "env", "inference", "fetch")}
    split["waiting"] = split.pop("fetch") - split["env"] - split["inference"]
    split["other"] = seconds - sum(split.values())
    result = {
        "tree": args.tree, "method": args.method, "collection": args.collection, "advantage": args.advantage,
        "workers": args.workers, "frames": f1, "timed_frames": f1 - f0, "seconds": seconds,
        "frames_per_s": (f1 - f0) / seconds, "split_s": split,
        "threads_after": torch.get_num_threads(),
    }  # fmt: skip
    if passes is not None:
        result["passes_per_frame"] = passes.core / f1
        result["encoder_per_frame"] = passes.encoder / f1
    if stopwatch.lags:
        result["policy_lag"] = {"mean": sum(stopwatch.lags) / len(stopwatch.lags), "max": max(stopwatch.lags)}
    if args.ceiling:
        result["collection_only_frames_per_s"] = collection_only(model, f1 - f0)
    print(json.dumps(result))
    return result


def collection_only(model, frames: int) -> float:
    """Frames/s of an in-process Collector with the run's envs and collection policy, no learning."""
    import torch
    from torchrl.collectors import Collector

    c = model.collection
    env = model.scenario.make_env(c.num_envs, c.start, model.hparams.seed, training=True)
    if model._teacher_logits_wanted:
        env = model.scenario.add_teacher_state(env, c.num_envs)
    per_batch = c.num_envs * c.rollout_length
    collector = Collector(env, model._collection_policy(), frames_per_batch=per_batch, total_frames=-1,
                          auto_register_policy_transforms=False)  # fmt: skip
    batches = iter(collector)
    try:
        with torch.no_grad():
            next(batches)
            done, start = 0, time.perf_counter()
            while done < frames:
                done += next(batches).numel()
        return done / (time.perf_counter() - start)
    finally:
        collector.shutdown()


if __name__ == "__main__":
    main()


#: the trainer of issue 26's start (grouped settings landed), timed side by side with this tree
#: (target ≥ 1.3×); the synchronous trainer before issue 14 (e177e27) took other constructor
#: arguments and can no longer be driven by this script
OLD_TRAINER_COMMIT = "b1e042e"
CONFIGS = [  # (tree, method, collection, advantage): alternated so load drifts hit both trees
    ("old", "none", "sync", "gae"),
    ("new", "none", "sync", "gae"),
    ("new", "none", "async", "gae"),
    ("new", "none", "async", "vtrace"),
    ("old", "ks", "sync", "gae"),
    ("new", "ks", "sync", "gae"),
    ("new", "ks", "async", "gae"),
]


def old_tree(root: Path, commit: str = OLD_TRAINER_COMMIT) -> Path:
    """A git worktree of ``commit`` under ``bench/.cache`` (made once)."""
    import subprocess

    tree = root / "bench" / ".cache" / f"trainer-{commit}"
    if not (tree / "lit_rl").is_dir():
        tree.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit],
                       cwd=root, check=True, capture_output=True)  # fmt: skip
    return tree


def compare(
    frames: int = 8192,
    num_envs: int = 32,
    rollout: int = 32,
    baseline: str | None = OLD_TRAINER_COMMIT,
    only: list[str] | None = None,
    timeout: float = 900.0,
) -> dict:
    """Every configuration of ``CONFIGS`` (or the names in ``only``) in its own process, one after
    the other, with the same model, envs and frames; the new synchronous none run also times
    collection alone. ``baseline`` is the commit of the ``old`` tree (``None``: this tree stands in
    for it, as the smoke test's does: no git worktree is made)."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    trees = {"new": root, "old": old_tree(root, baseline) if baseline else root}
    runs = {}
    for tree, method, collection, advantage in CONFIGS:
        name = f"{tree}/{method}/{collection}" + ("" if advantage == "gae" else f"/{advantage}")
        if only is not None and name not in only:
            continue
        command = [sys.executable, str(Path(__file__).resolve()), "--tree", str(trees[tree]),
                   "--method", method, "--collection", collection, "--frames", str(frames),
                   "--num-envs", str(num_envs), "--rollout", str(rollout),
                   "--advantage", advantage]  # fmt: skip
        if (tree, method, collection) == ("new", "none", "sync"):
            command.append("--ceiling")
        load = os.getloadavg()[0]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=root)
        if done.returncode:
            runs[name] = {"error": done.stderr[-2000:]}
            continue
        runs[name] = {**json.loads(done.stdout.strip().splitlines()[-1]), "load_average_before": load}
    return {"frames": frames, "num_envs": num_envs, "old_commit": baseline or "this tree", "runs": runs}
