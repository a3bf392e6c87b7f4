"""π*'s recorded Montezuma trajectories (written by ``lit_rl.recording.montezuma_bc``), read back as a
uniformly sampled TorchRL replay buffer for BC replay and EWC's Fisher."""

from __future__ import annotations

from pathlib import Path

from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, ReplayBuffer

#: the folder inside a recording that holds the memory-mapped frames
FRAMES = "frames"
#: what BC needs (pixels) plus what lets a user inspect the trajectories
KEYS = ("pixels", "action", "room", "x", "y", "keys", "episode", "step")
META = "meta.json"
#: demonstrations (start states and actions) that replay to the recorded frames
DEMOS = "demos.pt"


def load_trajectory_buffer(path: str | Path, min_episodes: int = 0) -> ReplayBuffer:
    """The recorded frames as a uniformly sampled TorchRL replay buffer (kept in memory); fewer
    than `min_episodes` trajectories is an error (the paper's BC data has > 500)."""
    folder = Path(path) / FRAMES
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no π* trajectories in {path}: build them with `make montezuma-pistar` (the laptop "
            f"preset's demonstrations) or `make montezuma-bc-data` (the paper preset's)"
        )
    data = TensorDict.load_memmap(folder).to_tensordict()
    episodes = data["episode"].unique().numel()
    if episodes < min_episodes:
        raise ValueError(
            f"{path} holds {episodes} trajectories but model.scenario.init_args.min_demonstrations "
            f"is {min_episodes}: record more, or lower min_demonstrations"
        )
    buffer = ReplayBuffer(storage=LazyTensorStorage(data.numel()))
    buffer.extend(data)
    return buffer
