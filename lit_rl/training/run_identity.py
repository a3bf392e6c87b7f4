"""A run's identity, from its configuration alone: the one rule for the default run-folder name.

``<preset>-<methods>-s<seed>``: the env preset (``configs/env/<preset>.yaml`` sets ``preset``), the
retention methods' names in canonical (sorted) order joined by ``+`` (``none`` without any;
``pretrain`` for a run that makes π*; ``+scratch`` when the student starts from random weights
towards a teacher), and the seed. Paper and CPU presets of one environment
never share a folder, and ``METHOD=ks+bc`` and ``METHOD=bc+ks`` name the same run.
"""

from __future__ import annotations

import json
from importlib import import_module
from pathlib import Path


def methods_label(names: list[str], pretrained: bool, teacher: bool = False) -> str:
    """The methods part of a run's name (also ``summary.json``'s ``method``): ``pretrain`` for a
    run that makes π* (no pre-trained policy, no teacher); a randomly initialised student
    regularised towards a teacher (the paper's Table 5) gets ``+scratch``."""
    if not pretrained and not teacher:
        return "pretrain" if not names else "+".join(sorted(names))
    label = "+".join(sorted(names)) or "none"
    return label if pretrained else f"{label}+scratch"


def default_run_name(preset: str, retention: list[str], seed: int, pretrained: bool, teacher: bool) -> str:
    """The run folder's name from the preset, the retention methods' class paths and the seed."""
    names = [_import(path).name for path in retention]
    return f"{preset}-{methods_label(names, pretrained, teacher)}-s{seed}"


def _import(class_path: str):
    module, _, name = class_path.rpartition(".")
    return getattr(import_module(module), name)


def run_state(run_dir: Path) -> str:
    """``done`` (finished summary), ``resume`` (a checkpoint to continue) or ``fresh``."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            if json.loads(summary.read_text()).get("finished"):
                return "done"
        except json.JSONDecodeError:
            pass
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        return "resume"
    return "fresh"
