"""A test-only callback: appends one JSON line per ``SubspaceEvaluator.evaluate`` call the run
makes (run folder, subspace, env frames) to ``path``, so a test counts evaluations across the
processes of a study."""

import json
from pathlib import Path

from lightning import Callback


class CountEvaluations(Callback):
    def __init__(self, path: str):
        self.path = Path(path)

    def setup(self, trainer, pl_module, stage: str) -> None:
        evaluator, evaluate = pl_module.evaluator, pl_module.evaluator.evaluate

        def counted(scenario, actor, subspace):
            line = {
                "run": trainer.default_root_dir,
                "subspace": subspace,
                "frames": int(pl_module.env_frames),
            }
            with self.path.open("a") as handle:
                handle.write(json.dumps(line) + "\n")
            return evaluate(scenario, actor, subspace)

        evaluator.evaluate = counted
