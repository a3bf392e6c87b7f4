"""Shared fixtures: a pre-trained AppleRetrieval policy built once per test session (once for all
pytest-xdist workers), and the rules that keep `make test`'s two workers (`-n 2 --dist loadgroup`)
from colliding:

- a module with module-scoped fixtures runs on one worker, so its fixture is built once;
- tests marked ``@pytest.mark.xdist_group("ddp")`` (two-process DDP over gloo, each binding a
  rendezvous port) run one after the other on the same worker.
"""

from __future__ import annotations

import fcntl
import os
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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep a module whose tests share a module-scoped fixture on one xdist worker (before
    xdist's ``loadgroup`` reads the groups), so the fixture is not built once per worker."""
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)
        defs = fixtures.name2fixturedefs.values() if fixtures else ()
        if any(d[-1].scope == "module" for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture(scope="session")
def pretrained_apple(tmp_path_factory, worker_id) -> Path:
    """π* for AppleRetrieval, pre-trained by the real CLI from FAR starts (≈10 s); under
    pytest-xdist the first worker to ask builds it under a file lock and the others reuse it."""
    if worker_id == "master":
        return _pretrain_apple(tmp_path_factory.mktemp("pretrain"))
    shared = tmp_path_factory.getbasetemp().parent / "pretrain_apple"
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        policy = shared / "apple.pt"
        return policy if policy.is_file() else _pretrain_apple(shared)


def _pretrain_apple(out: Path) -> Path:
    staging = out / f"apple.{os.getpid()}.pt"
    fit(
        "--config", str(ROOT / "configs/pretrain/apple.yaml"),
        "--model.export.policy", str(staging),
        "--run_dir", str(out / "run"),
    )  # fmt: skip
    return staging.rename(out / "apple.pt")
