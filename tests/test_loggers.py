"""``LOGGER=tensorboard`` and ``LOGGER=mlflow``: a short real run logs through Lightning's own
loggers, and what TensorBoard's event files and MLflow's SQLite store hold reads back equal to the
run's metrics.csv."""

from __future__ import annotations

import csv

import pytest
import torch

from lit_rl.cli import main
from tests.conftest import ROOT

SHORT = [
    "--model.pretrained", "null", "--model.budget.frames", "1024", "--model.collection.num_envs", "8",
    "--model.collection.rollout_length", "64", "--model.optimisation.minibatch_size", "256",
    "--model.optimisation.epochs", "1", "--model.evaluation.every_frames", "512",
    "--model.evaluation.episodes", "4",
]  # fmt: skip
METRIC = "eval/close/return_mean"


def short_run(tmp_path, monkeypatch, logger: str):
    monkeypatch.chdir(tmp_path)  # mlflow.db is written to the working folder
    torch.set_num_threads(1)
    main([
        "fit", "--config", str(ROOT / "configs/base.yaml"),
        "--config", str(ROOT / "configs/env/applegym.yaml"),
        *SHORT, "--config", str(ROOT / "configs/trainer/cpu.yaml"),
        "--config", str(ROOT / f"configs/logger/{logger}.yaml"), "--run_dir", str(tmp_path / "runs/short"),
    ])  # fmt: skip
    with open(tmp_path / "runs/short/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {name: [float(r[name]) for r in rows if r.get(name)] for name in (METRIC, "train/env_frames")}


def test_tensorboard_event_files_hold_the_runs_metrics(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    expected = short_run(tmp_path, monkeypatch, "tensorboard")
    events = EventAccumulator(str(tmp_path / "runs/short/tensorboard"))
    events.Reload()
    for name, values in expected.items():
        logged = [e.value for e in events.Scalars(name)]
        assert logged == pytest.approx(values) and len(values) >= 2, name


def test_mlflow_sqlite_store_holds_the_runs_metrics(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    expected = short_run(tmp_path, monkeypatch, "mlflow")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lit_rl")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "short"  # named after the run folder
    assert run.data.params["scenario/init_args/env_id"] == "lit_rl/AppleRetrieval-v0"
    for name, values in expected.items():
        history = sorted(client.get_metric_history(run.info.run_id, name), key=lambda m: m.step)
        assert [m.value for m in history] == pytest.approx(values) and len(values) >= 2, name


def test_an_unknown_logger_fails_fast_in_one_line(tmp_path):
    from tests.test_make import make, project_copy

    result = make(project_copy(tmp_path), "finetune", "LOGGER=wandb", timeout=30)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and "unknown LOGGER 'wandb'" in lines[0]
    assert all(name in lines[0] for name in ("csv", "mlflow", "neptune", "tensorboard"))
