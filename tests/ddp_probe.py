"""A test-only callback: each DDP rank saves its final policy weights beside the run."""

from pathlib import Path

import torch
from lightning import Callback


class SaveRankWeights(Callback):
    def on_train_end(self, trainer, pl_module) -> None:
        path = Path(trainer.default_root_dir) / f"rank{trainer.global_rank}.pt"
        torch.save(
            {
                "policy": pl_module.policy.state_dict(),
                "module": pl_module.state_dict(),
                "frames": int(pl_module.env_frames),
            },
            path,
        )
