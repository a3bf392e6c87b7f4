"""The project's Neptune logger records metrics and hyper-parameters (debug mode: in memory)."""

import pytest

from lit_rl.loggers import NeptuneLogger


def test_metrics_and_hyperparameters_are_recorded():
    logger = NeptuneLogger(mode="debug", name="test")
    logger.log_hyperparams({"lr": 0.5, "method": "ewc"})
    logger.log_metrics({"eval/far/return_mean": 29.0}, step=0)
    logger.log_metrics({"eval/far/return_mean": -3.0}, step=1)
    run = logger.experiment
    assert run["eval/far/return_mean"].fetch_last() == -3.0
    assert run["parameters/method"].fetch() == "ewc"
    logger.finalize("success")


def test_default_mode_is_offline_without_credentials(monkeypatch):
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    monkeypatch.delenv("NEPTUNE_PROJECT", raising=False)
    assert NeptuneLogger()._mode == "offline"


def test_online_mode_with_credentials(monkeypatch):
    monkeypatch.setenv("NEPTUNE_API_TOKEN", "token")
    monkeypatch.setenv("NEPTUNE_PROJECT", "ws/proj")
    assert NeptuneLogger()._mode == "async"


def test_online_mode_without_credentials_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    with pytest.raises(ValueError, match="NEPTUNE_API_TOKEN"):
        NeptuneLogger(mode="async")
