"""GPU throughput of NetHack fine-tuning at the paper's size, ready for the day a GPU is at hand.

    python -m bench.gpu [--frames 262144] [--method none|ks] [--device 0] [--out gpu.json]
    make bench-gpu

On a CUDA machine it fine-tunes the paper-size ScaledNet (``configs/env/nethack_paper.yaml`` over
``nethack.yaml``: its collection — envs per device, rollout length, workers, sync/async — and its
optimisation) with ``PPOFineTuning`` on one GPU for ``--frames`` frames, and prints one JSON
object:

- ``frames_per_s``: frames over the wall time after the first batch (start-up, CUDA
  initialisation and the first collection excluded);
- ``shares``: of that wall time, the learner's (``training_step``, CUDA-synchronised) and the
  collectors' (fetching a batch: stepping NetHack and the collection forward pass, or waiting for
  a collector process) and the rest (Lightning's loop, logging);
- ``gpu_memory_mib``: peak allocated and reserved by torch, and the device's total;
- ``gpu_utilisation_percent``: mean and max of ``torch.cuda.utilization()`` sampled every
  ``--sample-s`` seconds (NVML; ``null`` with the reason when NVML is not installed).

π* is a randomly initialised paper-size policy (throughput does not depend on what it learned; the
converted model_115 need not be present), training starts in CLOSE (no FAR start states or NLD-AA
needed), and evaluation is off: the figure is the training loop's. Without CUDA it says so in one
line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESET = ("configs/env/nethack.yaml", "configs/env/nethack_paper.yaml")
#: learner and collector time are read from these (patched for the run, see ``_Stopwatch``)
PHASES = ("learner", "collector")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=_positive, default=16 * 512 * 32,
                        help="training frames (default: 16 batches of the paper preset)")  # fmt: skip
    parser.add_argument(
        "--method", choices=["none", "ks"], default="none", help="retention (ks: kickstarting)"
    )
    parser.add_argument("--device", type=_non_negative, default=0, help="CUDA device index")
    parser.add_argument("--sample-s", type=float, default=0.5, help="GPU utilisation sampling period")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a device index (>= 0)")
    return value


def preset_model() -> dict:
    """The paper preset's ``model`` settings, overlaid as the CLI does (OmegaConf merge)."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(*(OmegaConf.load(ROOT / path) for path in PRESET))
    return OmegaConf.to_container(merged)["model"]


def run_settings(model: dict, frames: int) -> dict:
    """What the run uses of the preset: the scenario's size, the collection and optimisation groups
    as given, and the frame budget (learning from the first frame, evaluation off)."""
    scenario = model["scenario"]["init_args"]
    return {
        "scenario": {"size": scenario["size"], "max_episode_steps": scenario["max_episode_steps"]},
        "collection": {k: v for k, v in model["collection"].items() if k != "teacher_frames"},
        "optimisation": dict(model["optimisation"]),
        "advantage": dict(model.get("advantage", {})),
        "loss": dict(model.get("loss", {})),
        "frames": frames,
    }


def summarise(settings: dict, marks: list[tuple[float, int, dict]], memory: dict, utilisation) -> dict:
    """The JSON report from the batch-end marks ``(time, frames, phase seconds so far)``."""
    (t0, f0, s0), (t1, f1, s1) = marks[0], marks[-1]
    wall = t1 - t0
    phases = {phase: s1.get(phase, 0.0) - s0.get(phase, 0.0) for phase in PHASES}
    shares = {phase: seconds / wall if wall > 0 else None for phase, seconds in phases.items()}
    shares["other"] = None if wall <= 0 else max(0.0, 1.0 - sum(shares.values()))
    if isinstance(utilisation, str) or not utilisation:
        gpu_util = {"mean": None, "max": None, "samples": 0, "reason": utilisation or "no sample taken"}
    else:
        gpu_util = {
            "mean": sum(utilisation) / len(utilisation),
            "max": max(utilisation),
            "samples": len(utilisation),
        }
    return {
        "settings": settings,
        "frames": f1,
        "timed_frames": f1 - f0,
        "timed_s": wall,
        "frames_per_s": (f1 - f0) / wall if wall > 0 else None,
        "seconds": phases,
        "shares": shares,
        "gpu_memory_mib": memory,
        "gpu_utilisation_percent": gpu_util,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


class _Sampler(threading.Thread):
    """Samples ``torch.cuda.utilization`` until stopped; ``result`` is the samples or why none."""

    def __init__(self, device: int, period: float):
        super().__init__(daemon=True)
        self.device, self.period = device, period
        self.samples: list[float] = []
        self.reason: str | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        import torch

        while not self._stop_event.wait(self.period):
            try:
                self.samples.append(float(torch.cuda.utilization(self.device)))
            except Exception as error:  # NVML (pynvml) missing or unsupported
                self.reason = f"torch.cuda.utilization unavailable: {error}"
                return

    def stop(self):
        self._stop_event.set()
        self.join()
        return self.reason if self.reason and not self.samples else self.samples


def train_and_time(
    settings: dict, method: str, accelerator: str, device: int
) -> list[tuple[float, int, dict]]:
    """Fine-tune with ``settings`` (``run_settings``) on one device; returns the batch-end marks
    ``(time, frames, learner/collector seconds so far)``. The learner's time is synchronised with
    the device, so it holds the GPU's work, not only its launch."""
    import torch
    from lightning import Callback, Trainer

    from lit_rl.models.policy_io import save_policy
    from lit_rl.retention import Kickstarting
    from lit_rl.scenarios.nethack import NetHack
    from lit_rl.training.ppo import Advantage, Optimisation, PPOFineTuning, PPOLoss
    from lit_rl.training.settings import Budget, Collection, Evaluation

    torch.manual_seed(0)
    scenario = NetHack(**settings["scenario"])
    workdir = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    pistar = workdir / "pi.pt"
    save_policy(pistar, scenario.make_policy().modules(), scenario.describe())
    model = PPOFineTuning(
        scenario,
        pretrained=str(pistar),
        retention=[Kickstarting()] if method == "ks" else [],
        budget=Budget(frames=settings["frames"]),
        collection=Collection(**settings["collection"]),
        optimisation=Optimisation(**settings["optimisation"]),
        advantage=Advantage(**settings["advantage"]),
        loss=PPOLoss(**settings["loss"]),
        evaluation=Evaluation(every_frames=10**15),
    )
    seconds = dict.fromkeys(PHASES, 0.0)
    synchronise = (lambda: torch.cuda.synchronize(device)) if accelerator == "gpu" else (lambda: None)
    step, loader = model.training_step, model.train_dataloader

    def timed_step(*args, **kwargs):
        start = time.perf_counter()
        try:
            return step(*args, **kwargs)
        finally:
            synchronise()
            seconds["learner"] += time.perf_counter() - start

    def timed_loader():
        batches = loader()
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            finally:
                seconds["collector"] += time.perf_counter() - start
            yield batch

    model.training_step, model.train_dataloader = timed_step, timed_loader
    marks: list[tuple[float, int, dict]] = []

    class Marks(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            marks.append((time.perf_counter(), int(pl_module.env_frames), dict(seconds)))

    trainer = Trainer(accelerator=accelerator, devices=[device] if accelerator == "gpu" else 1, max_epochs=1,
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, callbacks=[Marks()],
                      default_root_dir=str(workdir))  # fmt: skip
    trainer.fit(model)
    return marks


def measure(args: argparse.Namespace) -> dict:
    """The run on CUDA device ``args.device`` with the paper preset's settings (needs CUDA)."""
    import torch

    settings = run_settings(preset_model(), args.frames)
    torch.cuda.reset_peak_memory_stats(args.device)
    sampler = _Sampler(args.device, args.sample_s)
    sampler.start()
    try:
        marks = train_and_time(settings, args.method, "gpu", args.device)
    finally:
        utilisation = sampler.stop()
    if len(marks) < 2:
        raise SystemExit(
            f"bench.gpu: error: --frames {args.frames} is {len(marks)} batch(es): timing needs 2"
        )
    mib = 1 << 20
    memory = {
        "peak_allocated": torch.cuda.max_memory_allocated(args.device) / mib,
        "peak_reserved": torch.cuda.max_memory_reserved(args.device) / mib,
        "total": torch.cuda.get_device_properties(args.device).total_memory / mib,
        "device": torch.cuda.get_device_name(args.device),
    }
    return {**summarise(settings, marks, memory, utilisation), "method": args.method}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench.gpu: no CUDA device here (torch.cuda.is_available() is False): run it on a GPU "
              "machine with a CUDA build of torch", file=sys.stderr)  # fmt: skip
        return 2
    if args.device >= torch.cuda.device_count():
        print(f"bench.gpu: error: --device {args.device}: this machine has {torch.cuda.device_count()} "
              "CUDA device(s), index from 0", file=sys.stderr)  # fmt: skip
        return 2
    result = measure(args)
    text = json.dumps(result, indent=1)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
