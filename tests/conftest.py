"""Shared fixtures: a pre-trained AppleRetrieval policy built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_rl.cli import main

ROOT = Path(__file__).resolve().parents[1]
APPLE = [
    "--config",
    str(ROOT / "configs/base.yaml"),
    "--config",
    str(ROOT / "configs/env/apple.yaml"),
]
TRAINER = [
    "--config", str(ROOT / "configs/trainer/cpu.yaml"),
    "--config", str(ROOT / "configs/logger/csv.yaml"),
]  # fmt: skip


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for the test: small convolutions gain nothing from threads, and on a
    busy 2-core machine two threads made them up to 20× slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def fit(*args: str) -> None:
    """Run ``lit-rl fit`` in-process with the apple configs and the given extra arguments."""
    torch.set_num_threads(1)
    main(["fit", *APPLE, *TRAINER, *args])


@pytest.fixture(scope="session")
def pretrained_apple(tmp_path_factory) -> Path:
    """π* for AppleRetrieval, pre-trained by the real CLI from FAR starts (≈10 s)."""
    out = tmp_path_factory.mktemp("pretrain")
    policy = out / "apple.pt"
    fit(
        "--config", str(ROOT / "configs/pretrain/apple.yaml"),
        "--model.export.policy", str(policy),
        "--run_dir", str(out / "run"),
    )  # fmt: skip
    return policy
