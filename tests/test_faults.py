"""A simulator that dies mid-run is restarted, counted, and the run completes its budget."""

import pytest
from lightning import Trainer

from lit_rl.envs.apple import AppleRetrievalEnv
from lit_rl.scenarios import AppleRetrieval
from lit_rl.training.finetune import PPOFineTuning


class CrashingAppleEnv(AppleRetrievalEnv):
    """Dies like a crashed simulator after ``crash_after`` steps."""

    def __init__(self, *args, crash_after: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.crash_after, self.steps = crash_after, 0

    def _step(self, tensordict):
        self.steps += 1
        if self.steps == self.crash_after:
            raise RuntimeError("simulated simulator crash")
        return super()._step(tensordict)


class CrashingApple(AppleRetrieval):
    """Training environments crash once each, for the first ``crashes`` builds."""

    def __init__(self, crashes: int):
        super().__init__()
        self.crashes = crashes

    def make_env(self, num_envs, start, seed, training=False):
        if not training or self.crashes == 0:
            return super().make_env(num_envs, start, seed, training)
        self.crashes -= 1
        return CrashingAppleEnv(num_envs, self.length, self.scale, start=start, crash_after=150)


def fit(module: PPOFineTuning) -> None:
    Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False).fit(module)  # fmt: skip


def test_crashed_simulator_is_restarted_and_the_budget_completed():
    module = PPOFineTuning(CrashingApple(crashes=2), train_start="far", budget_frames=6400 * 4)
    with pytest.warns(UserWarning, match="simulated simulator crash"):
        fit(module)
    assert int(module.simulator_restarts) == 2
    assert int(module.env_frames) == 6400 * 4


def test_a_simulator_that_keeps_dying_stops_the_run_with_a_clear_message():
    module = PPOFineTuning(CrashingApple(crashes=5), train_start="far", budget_frames=6400 * 4,
                           max_simulator_restarts=2)  # fmt: skip
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="resume with RESUME=1"):
        fit(module)
