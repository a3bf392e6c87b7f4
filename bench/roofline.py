"""The distance to the machine's limit of NetHack fine-tuning with the tiny ScaledNet (issue 26).

Per training frame it counts the floating-point operations of the real modules with the formulas
of torch's ``FlopCounterMode`` (``torch.utils.flop_counter.flop_registry``: matrix products and
convolutions, forward and backward; element-wise work is not counted, as in every FLOP count of
this kind), plus one of its own for the fused CPU LSTM (``aten.mkldnn_rnn_layer``, which torch
counts as 0), applied by a dispatch mode of its own (``OpRecorder``): ``FlopCounterMode`` itself
fails inside the PPO loss (its module tracker compares TorchRL's TensorDict parameters with
``==``); on the collection pass (no fused LSTM) both counts are computed and must agree:

- ``collection``: the collection policy's forward on a flat batch of the run's environments (what
  the collector runs per frame, under ``no_grad``);
- ``learner``: one whole ``training_step`` of ``PPOFineTuning`` on a collected batch (GAE's value
  passes, the PPO loss's forward and its backward, the optimiser), divided by the batch's frames.

``OpRecorder`` also notes the op and shapes of every matrix product and convolution, and replays
each shape alone on random tensors, timed, on one thread: the sum of their times is what one
frame's FLOPs take at this machine's measured speed for exactly those shapes
(``limit_frames_per_s``, one core; the trainer also runs on one torch thread). A short real fit of
the same model gives the trainer's frames/s, and their ratio is the share of the machine (of one
core's matrix-product speed) the trainer uses; the rest is Python, TensorDict, the simulator and
element-wise work.

    python -m bench.roofline --frames 2048 --num-envs 16
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

aten = torch.ops.aten


def lstm_layer_flops(input: torch.Tensor, hidden_size: int, batch_first: bool) -> int:
    """One fused LSTM layer's forward: per frame 4 gates of ``hidden × (input + hidden)``
    multiply-adds (2 FLOPs each). Hand-written: torch's FLOP counter has no formula for the oneDNN
    LSTM (``aten.mkldnn_rnn_layer``) that ``nn.LSTM`` runs on the CPU and counts it as 0."""
    steps, rows = (input.shape[1], input.shape[0]) if batch_first else (input.shape[0], input.shape[1])
    return 2 * 4 * hidden_size * (input.shape[-1] + hidden_size) * steps * rows


def _lstm_forward(input, w0, w1, w2, w3, hx, cx, reverse, batch_sizes, mode, hidden_size, num_layers,
                  has_biases, bidirectional, batch_first, train, *, out_val=None) -> int:  # fmt: skip
    return lstm_layer_flops(input, hidden_size, batch_first)


def _lstm_backward(input, w1, w2, w3, w4, hx, cx, output, hy, cy, grad_output, grad_hy, grad_cy, reverse,
                   mode, hidden_size, num_layers, has_biases, train, bidirectional, batch_sizes,
                   batch_first, workspace, *, out_val=None) -> int:  # fmt: skip
    """Gradients of the inputs and of the weights: each a forward's worth (the usual 2×)."""
    return 2 * lstm_layer_flops(input, hidden_size, batch_first)


#: FLOP formulas: torch's, and the fused CPU LSTM's (forward and backward)
FORMULAS = {
    **flop_registry,
    aten.mkldnn_rnn_layer: _lstm_forward,
    aten.mkldnn_rnn_layer_backward: _lstm_backward,
}


class OpRecorder(TorchDispatchMode):
    """Counts the FLOPs (``FORMULAS``) and notes ``(op, argument shapes)`` of every op that has a
    formula, to be replayed alone (``replay``); an LSTM backward is replayed with its forward."""

    def __init__(self):
        super().__init__()
        self.calls: Counter = Counter()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = FORMULAS.get(func._overloadpacket)
        if formula is not None:
            if func._overloadpacket is not aten.mkldnn_rnn_layer_backward:
                self.calls[(func, _describe(args), _describe(kwargs))] += 1
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def _describe(value):
    """A hashable description: tensors as ("tensor", shape, dtype), containers item by item."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), str(value.dtype).removeprefix("torch."))
    if isinstance(value, (list, tuple)):
        return tuple(_describe(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _describe(v)) for k, v in value.items()))
    return value


def _rebuild(description, generator: torch.Generator):
    if isinstance(description, tuple) and description[:1] == ("tensor",):
        _, shape, dtype = description
        return torch.randn(shape, dtype=getattr(torch, dtype), generator=generator)
    if isinstance(description, tuple):
        return tuple(_rebuild(v, generator) for v in description)
    return description


def replay(calls: Counter, blocks: int = 5, block_s: float = 0.02) -> dict:
    """Each recorded shape alone on random tensors, one thread: its FLOPs and its time per call,
    the best of ``blocks`` timed blocks (the machine's speed for that shape, less the moments a
    loaded machine took the core away). A fused LSTM layer is replayed as an ``nn.LSTM`` of its
    shapes, forward and (when it was trained) backward."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for (func, args, kwargs), count in calls.items():
        call = _lstm_call(args, generator) if func._overloadpacket is aten.mkldnn_rnn_layer else None
        if call is None:
            built_args = list(_rebuild(args, generator))
            built_kwargs = dict(_rebuild(kwargs, generator))

            def call(built_args=built_args, built_kwargs=built_kwargs, func=func):
                func(*built_args, **built_kwargs)

        with OpRecorder() as recorder:  # also the warm-up (oneDNN builds its kernel on first use)
            call()
        best = float("inf")
        for _ in range(blocks):
            repeats, start = 0, time.perf_counter()
            while repeats < 2 or time.perf_counter() - start < block_s:
                call()
                repeats += 1
            best = min(best, (time.perf_counter() - start) / repeats)
        rows.append({"op": str(func.__name__), "shapes": str(args), "calls": count, "flops": recorder.flops,
                     "seconds": best})  # fmt: skip
    return {
        "flops": sum(r["flops"] * r["calls"] for r in rows),
        "seconds": sum(r["seconds"] * r["calls"] for r in rows),
        "ops": sorted(rows, key=lambda r: -r["seconds"] * r["calls"]),
    }


def _lstm_call(args: tuple, generator: torch.Generator):
    """An ``nn.LSTM`` with a recorded ``mkldnn_rnn_layer``'s shapes: forward, and backward when the
    recorded call trained (its ``train`` flag)."""
    (_, shape, _), hidden, batch_first, train = args[0], args[10], args[14], args[15]
    lstm = torch.nn.LSTM(shape[-1], hidden, batch_first=batch_first)
    x = torch.randn(shape, generator=generator, requires_grad=train)

    def call():
        if not train:
            with torch.no_grad():
                lstm(x)
            return
        output, _ = lstm(x)
        output.sum().backward()

    return call


def build(num_envs: int, rollout: int, frames: int, workdir: Path):
    """The NetHack tiny-ScaledNet trainer of ``bench.nethack_training`` (its settings, random π*)."""
    from lit_rl.models.policy_io import save_policy
    from lit_rl.scenarios.nethack import NetHack
    from lit_rl.training.ppo import Advantage, Optimisation, PPOFineTuning, PPOLoss
    from lit_rl.training.settings import Budget, Collection, Evaluation

    torch.manual_seed(0)
    scenario = NetHack(size="tiny", max_episode_steps=500)
    pistar = workdir / "pi.pt"
    save_policy(pistar, scenario.make_policy().modules(), scenario.describe())
    return PPOFineTuning(
        scenario,
        pretrained=str(pistar),
        budget=Budget(frames=frames),
        collection=Collection(num_envs=num_envs, rollout_length=rollout),
        optimisation=Optimisation(minibatch_size=128, lr=1e-4, lr_decay=True, max_grad_norm=4.0),
        advantage=Advantage(gamma=0.999999, gae_lambda=1.0),
        loss=PPOLoss(
            clip_epsilon=0.1, value_clip=1.0, normalize_returns=True, critic_coef=1.0, entropy_coef=0.001
        ),  # fmt: skip
        evaluation=Evaluation(every_frames=10**12),
    )


def run(frames: int = 2048, num_envs: int = 16, rollout: int = 32) -> dict:
    from lightning import Callback, Trainer

    torch.set_num_threads(1)
    workdir = Path(tempfile.mkdtemp(prefix="bench-roofline-"))
    model = build(num_envs, rollout, frames, workdir)
    recorders = {"collection": OpRecorder(), "learner": OpRecorder()}
    flop_counter_total = [0]  # FlopCounterMode's own count of the collection pass
    frames_counted = {"collection": 0, "learner": 0}
    marks: list[tuple[float, int]] = []
    policy = model._collection_policy()
    inner = policy.forward
    step = model.training_step

    def counted_policy(td, *args, **kwargs):  # the first collection batch's passes
        if frames_counted["collection"] >= num_envs * rollout:
            return inner(td, *args, **kwargs)
        with FlopCounterMode(display=False) as counter, recorders["collection"]:
            out = inner(td, *args, **kwargs)
        flop_counter_total[0] += counter.get_total_flops()
        frames_counted["collection"] += td.numel()
        return out

    def counted_step(batch, batch_idx):  # the second batch: the optimiser's state exists
        if batch_idx != 1:
            return step(batch, batch_idx)
        with recorders["learner"]:
            out = step(batch, batch_idx)
        frames_counted["learner"] += batch.numel()
        return out

    class Marks(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            marks.append((time.perf_counter(), int(pl_module.env_frames)))

    policy.forward, model.training_step = counted_policy, counted_step
    model._collection_policy = lambda: policy
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[Marks()],
                      default_root_dir=str(workdir))  # fmt: skip
    trainer.fit(model)
    # the trainer's own speed: batches 3… (the first two carried the counting)
    (t0, f0), (t1, f1) = marks[min(2, len(marks) - 2)], marks[-1]
    trainer_fps = (f1 - f0) / (t1 - t0)
    assert flop_counter_total[0] == recorders["collection"].flops, "FLOP counts disagree"
    per_frame = {k: recorders[k].flops / max(frames_counted[k], 1) for k in recorders}
    passes = {k: replay(recorders[k].calls) for k in recorders}
    limit_s = sum(passes[k]["seconds"] / max(frames_counted[k], 1) for k in passes)
    result = {
        "num_envs": num_envs, "rollout": rollout, "frames": f1, "threads": torch.get_num_threads(),
        "flops_per_frame": {**per_frame, "total": sum(per_frame.values())},
        "machine_flops_per_s": {k: passes[k]["flops"] / passes[k]["seconds"] for k in passes},
        "limit_frames_per_s": 1.0 / limit_s,
        "trainer_frames_per_s": trainer_fps,
        "trainer_flops_per_s": trainer_fps * sum(per_frame.values()),
        "share_of_one_core": trainer_fps * limit_s,
        "slowest_ops": {k: passes[k]["ops"][:5] for k in passes},
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2048)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--rollout", type=int, default=32)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.frames, args.num_envs, args.rollout), indent=1))


if __name__ == "__main__":
    main()
