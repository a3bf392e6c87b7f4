"""A Lightning ``Logger`` for Neptune (neptune 1.x client).

Lightning ≥ 2.6.4 no longer ships a Neptune logger, so the project owns this small one. The mode is
chosen so that a run never needs a network: ``offline`` by default (metadata kept under ``.neptune/``
in the working directory; upload later with ``neptune sync``), ``async`` when an API token and a
project are given (arguments or ``NEPTUNE_API_TOKEN`` / ``NEPTUNE_PROJECT``), ``debug`` in tests
(kept in memory only).
"""

from __future__ import annotations

import os
from argparse import Namespace
from typing import Any

import neptune
from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from neptune.utils import stringify_unsupported

MODES = ("offline", "async", "sync", "debug", "read-only")


class NeptuneLogger(Logger):
    """Logs metrics as Neptune series (``run[key].append(value, step=...)``) and hyper-parameters.

    Args:
        project: ``workspace/project``; falls back to ``NEPTUNE_PROJECT``.
        api_token: falls back to ``NEPTUNE_API_TOKEN``.
        mode: force a Neptune connection mode; by default ``async`` with credentials, else
            ``offline``.
        name: run name shown in the Neptune UI.
        tags: run tags.
    """

    def __init__(
        self,
        project: str | None = None,
        api_token: str | None = None,
        mode: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
    ):
        super().__init__()
        self._project = project or os.environ.get("NEPTUNE_PROJECT")
        self._api_token = api_token or os.environ.get("NEPTUNE_API_TOKEN")
        if mode is None:
            mode = "async" if self._project and self._api_token else "offline"
        if mode not in MODES:
            raise ValueError(f"unknown Neptune mode {mode!r}: choose one of {MODES}")
        if mode in ("async", "sync") and not (self._project and self._api_token):
            raise ValueError(
                f"Neptune mode {mode!r} needs a project and token: set NEPTUNE_PROJECT and "
                "NEPTUNE_API_TOKEN, or use mode 'offline'"
            )
        self._mode, self._name, self._tags = mode, name, tags or []
        self._run: neptune.Run | None = None

    @property
    def name(self) -> str:
        return self._name or "lit_rl"

    @property
    def version(self) -> str:
        return self.experiment["sys/id"].fetch() if self._mode != "offline" else "offline"

    @property
    @rank_zero_experiment
    def experiment(self) -> neptune.Run:
        if self._run is None:
            self._run = neptune.init_run(
                project=self._project,
                api_token=self._api_token,
                mode=self._mode,
                name=self._name,
                tags=self._tags,
                capture_stdout=False,
                capture_stderr=False,
                capture_hardware_metrics=False,
                git_ref=False,
                source_files=[],
            )
        return self._run

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        params = vars(params) if isinstance(params, Namespace) else dict(params)
        self.experiment["parameters"] = stringify_unsupported(params)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.experiment[key].append(float(value), step=step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._run is not None:
            self._run["status"] = status
            self._run.stop()
            self._run = None
