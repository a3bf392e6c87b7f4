# ruff: noqa: F811  (the recordings fixture is imported from test_nld)
"""Issue 14, point 3: BC replay's recorded-game chunks are read ahead in a background thread.

The chunks and their order are the dataset stream's own, and the thread is gone when a fit ends,
normally or by an exception.
"""

from __future__ import annotations

import threading

import pytest
import torch
from lightning import Trainer

from lit_rl.models.policy_io import save_policy
from lit_rl.retention import BehaviouralCloningReplay
from lit_rl.scenarios.nethack import NetHack
from lit_rl.training.ppo import Optimisation, PPOFineTuning
from lit_rl.training.pretraining_data import Prefetched
from lit_rl.training.settings import Budget, Collection, Evaluation
from tests.test_nld import recordings  # noqa: F401  (fixture: two recorded expert games, indexed)

ROWS, STEPS = 2, 16
THREAD = "lit_rl-bc-dataset"


def scenario(recordings) -> NetHack:
    directory, db, _ = recordings
    return NetHack(size="tiny", data_dir=str(directory), dataset_index=str(db), dataset_name="expert",
                   max_episode_steps=50)  # fmt: skip


def assert_same_chunks(got: list, expected: list) -> None:
    assert len(got) == len(expected) > 0
    for mine, theirs in zip(got, expected, strict=True):
        assert set(mine.keys(True, True)) == set(theirs.keys(True, True))
        for key in theirs.keys(True, True):
            assert torch.equal(mine[key], theirs[key]), key


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD and t.is_alive()]


def test_prefetched_stream_is_the_stream_in_order(recordings):
    plain = scenario(recordings).pretraining_sequences(ROWS, STEPS, seed=0)
    ahead = Prefetched(scenario(recordings).pretraining_sequences(ROWS, STEPS, seed=0), depth=2)
    try:
        expected = [next(plain).clone() for _ in range(12)]
        assert_same_chunks([next(ahead) for _ in range(12)], expected)
    finally:
        ahead.close()
    assert not ahead.alive


def test_source_errors_and_ends_reach_the_consumer():
    def failing():
        yield 1
        raise ValueError("corrupt chunk")

    stream = Prefetched(failing())
    assert next(stream) == 1
    with pytest.raises(ValueError, match="corrupt chunk"):
        next(stream)
    assert list(Prefetched(iter(range(5)))) == [0, 1, 2, 3, 4]


class ChunkSpy:
    """Records the chunks BC replay reads through the trainer; raises at read ``fail_at``."""

    def __init__(self, model: PPOFineTuning, fail_at: int | None = None):
        self.read, self.fail_at, self.read_ahead = model._pretraining_sequences, fail_at, []
        self.chunks: list = []
        self.model = model

    def __call__(self, rows: int, steps: int):
        if self.fail_at is not None and len(self.chunks) == self.fail_at:
            raise RuntimeError("a failure inside training_step")
        chunk = self.read(rows, steps)
        self.read_ahead.append(getattr(self.model._sequence_source, "alive", False))
        self.chunks.append(chunk.clone())
        return chunk


def bc_model(recordings, tmp_path, **settings) -> PPOFineTuning:
    torch.manual_seed(0)
    game = scenario(recordings)
    teacher = tmp_path / "pi.pt"
    save_policy(teacher, game.make_policy().modules(), game.describe())
    bc = BehaviouralCloningReplay(batch_size=ROWS * STEPS, seq_length=STEPS)
    return PPOFineTuning(
        game,
        pretrained=str(teacher),
        retention=[bc],
        **settings,
        collection=Collection(num_envs=2, rollout_length=STEPS),
        optimisation=Optimisation(minibatch_size=STEPS, lr=1e-4),
        budget=Budget(frames=4 * 2 * STEPS),
        evaluation=Evaluation(every_frames=10**9),
    )


def fit(model: PPOFineTuning) -> None:
    Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False).fit(model)  # fmt: skip


def test_bc_replay_reads_the_dataset_ahead_and_stops_the_reader_at_the_end(
    recordings, tmp_path, one_torch_thread
):
    model = bc_model(recordings, tmp_path)
    model._pretraining_sequences = spy = ChunkSpy(model)
    fit(model)
    assert all(spy.read_ahead) and not prefetch_threads()
    plain = scenario(recordings).pretraining_sequences(ROWS, STEPS, seed=model.hparams.seed)
    assert_same_chunks(spy.chunks, [next(plain) for _ in spy.chunks])


def test_an_exception_during_fit_stops_the_reader(recordings, tmp_path, one_torch_thread):
    model = bc_model(recordings, tmp_path)
    model._pretraining_sequences = spy = ChunkSpy(model, fail_at=2)
    with pytest.raises(RuntimeError, match="inside training_step"):
        fit(model)
    assert len(spy.chunks) == 2 and all(spy.read_ahead)
    assert not prefetch_threads()
