"""Retention with a recurrent policy (NetHack's ScaledNet): every network keeps its own LSTM state.

- KS: π* runs beside the student in the collector with its own recurrent state, so the
  ``teacher_logits`` it stores equal π* replayed alone over the same frames.
- BC: consecutive dataset chunks are replayed with the teacher's and the student's states carried
  from one chunk to the next and reset at episode starts.
- EWC: flat dataset states carry the LSTM state π* had before each frame.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictSequential
from torchrl.collectors import Collector

from lit_rl.datasets.nld import build_index
from lit_rl.recording.nethack_games import record_games
from lit_rl.retention import BehaviouralCloningReplay, RetentionContext, teacher_student_kl
from lit_rl.retention.base import policy_logits, sequence_model
from lit_rl.scenarios import NetHack
from lit_rl.training.pretraining_data import DatasetStates, RolloutSequences

ROWS, STEPS = 2, 16


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two short expert games, recorded and indexed as the fine-tuning data source (≈5 s)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("nethack") / "data"
    record_games(out, games=2, seed=3, max_steps=150)
    build_index(out, out / "index.db")
    return out


def two_policies(scenario: NetHack):
    """A student and a teacher with different weights (π* and a student that has moved away)."""
    torch.manual_seed(0)
    student = scenario.make_policy().actor
    teacher = copy.deepcopy(student).requires_grad_(False)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return student, teacher


def test_ks_teacher_keeps_its_own_recurrent_state_while_collecting():
    """Over two collector batches with episode ends inside them, the stored ``teacher_logits``
    equal π* replayed alone over each row from a zero state (resetting at ``is_init``), and its
    state differs from the student's."""
    scenario = NetHack(size="tiny", max_episode_steps=12)
    student, teacher = two_policies(scenario)
    assert "teacher_state_h" not in scenario.make_env(ROWS, "close", seed=0).reset().keys()
    collector = Collector(
        scenario.add_teacher_state(scenario.make_env(ROWS, "close", seed=0, training=True), ROWS),
        TensorDictSequential(student, scenario.teacher_probe(teacher)),
        frames_per_batch=ROWS * STEPS,
        total_frames=2 * ROWS * STEPS,
        auto_register_policy_transforms=False,
    )
    rollout = torch.cat([batch.clone() for batch in collector], dim=1)
    collector.shutdown()
    assert rollout.shape == (ROWS, 2 * STEPS)
    assert rollout["is_init"][:, 1:].any()  # episodes ended and restarted inside the rows
    with torch.no_grad():
        alone, _ = sequence_model(teacher).replay(rollout, None)
    torch.testing.assert_close(rollout["teacher_logits"], alone, atol=1e-4, rtol=1e-4)
    later = ~rollout["is_init"].squeeze(-1)
    assert not torch.allclose(rollout["teacher_state_h"][later], rollout["recurrent_state_h"][later])


def chunks_of(dataset: Path, scenario: NetHack, count: int) -> list[TensorDict]:
    stream = scenario.pretraining_sequences(ROWS, STEPS, seed=0)
    return [next(stream) for _ in range(count)]


def test_bc_replay_carries_teacher_and_student_states_across_chunks(dataset):
    """The BC term on the second chunk equals KL(π* ‖ π_θ) on those frames when both networks
    replay both chunks in one sequence, and differs from restarting both from zero state."""
    scenario = NetHack(size="tiny", data_dir=str(dataset))
    student, teacher = two_policies(scenario)
    first, second = chunks_of(dataset, scenario, 2)
    pending = iter([first.clone(), second.clone()])
    ctx = RetentionContext(student, teacher, {}, pretraining_states=None,
                           pretraining_sequences=lambda rows, steps: next(pending))  # fmt: skip
    method = BehaviouralCloningReplay(coef=1.0, batch_size=ROWS * STEPS, seq_length=STEPS)
    method.loss(ctx, batch=None)
    carried = method.loss(ctx, batch=None)

    both = torch.cat([first, second], dim=1)
    with torch.no_grad():
        s_logits, _ = sequence_model(student).replay(both, None)
        t_logits, _ = sequence_model(teacher).replay(both, None)
        restart = teacher_student_kl(
            sequence_model(teacher).replay(second, None)[0],
            sequence_model(student).replay(second, None)[0],
            second["valid"],
        )
    expected = teacher_student_kl(t_logits[:, STEPS:], s_logits[:, STEPS:], second["valid"])
    torch.testing.assert_close(carried.detach(), expected, atol=1e-5, rtol=1e-4)
    assert not second["is_init"][:, 0].all()  # the rows continue: the carried state matters
    assert abs(carried.item() - restart.item()) > 1e-6


def test_bc_replay_action_target_is_masked_cross_entropy(dataset):
    """``target: action`` on chunks is −log π_θ(recorded action) averaged over valid frames."""
    scenario = NetHack(size="tiny", data_dir=str(dataset))
    student, teacher = two_policies(scenario)
    (chunk,) = chunks_of(dataset, scenario, 1)
    chunk["valid"][:, -3:] = False  # as the zero padding at the end of a finite pass
    ctx = RetentionContext(student, teacher, {}, pretraining_states=None,
                           pretraining_sequences=lambda rows, steps: chunk.clone())  # fmt: skip
    method = BehaviouralCloningReplay(coef=2.0, target="action", batch_size=32, seq_length=STEPS)
    loss = method.loss(ctx, batch=None)
    with torch.no_grad():
        logp = torch.log_softmax(sequence_model(student).replay(chunk, None)[0], -1)
    picked = -logp.gather(-1, chunk["action"].unsqueeze(-1)).squeeze(-1)[chunk["valid"]]
    torch.testing.assert_close(loss.detach(), 2.0 * picked.mean(), atol=1e-5, rtol=1e-4)


def test_dataset_states_carry_the_teachers_state_before_each_frame(dataset):
    """A single-step evaluation of the flat dataset states (what EWC's Fisher reads) reproduces
    π*'s logits from replaying the recorded sequences."""
    scenario = NetHack(size="tiny", data_dir=str(dataset))
    _, teacher = two_policies(scenario)
    first, second = chunks_of(dataset, scenario, 2)
    states = DatasetStates(iter([first.clone(), second.clone()]), teacher, spread=1)(2 * ROWS * STEPS)
    assert states.shape == (2 * ROWS * STEPS,)
    with torch.no_grad():
        replayed, _ = sequence_model(teacher).replay(torch.cat([first, second], dim=1), None)
        single = policy_logits(teacher, states)
    # states come chunk by chunk, each [rows, steps] flattened row-major
    expected = torch.cat([replayed[:, :STEPS].reshape(-1, replayed.shape[-1]),
                          replayed[:, STEPS:].reshape(-1, replayed.shape[-1])])  # fmt: skip
    # (the distribution's logits are normalised: compare log-probabilities)
    torch.testing.assert_close(single, torch.log_softmax(expected, -1), atol=1e-4, rtol=1e-4)


def test_finetuning_reads_the_scenarios_dataset_when_it_has_one(dataset, tmp_path):
    """With an index in ``data_dir`` the fine-tuning module's BC chunks and EWC states come from
    the recorded games (their frames carry ``valid``), not from π*'s rollouts."""
    from lit_rl.models.policy_io import save_policy
    from lit_rl.training.ppo import PPOFineTuning

    scenario = NetHack(size="tiny", data_dir=str(dataset))
    policy = scenario.make_policy().modules()
    save_policy(tmp_path / "pi.pt", policy, scenario.describe())
    model = PPOFineTuning(
        scenario, pretrained=str(tmp_path / "pi.pt"), retention=[BehaviouralCloningReplay(batch_size=32)]
    )
    chunk = model._pretraining_sequences(ROWS, STEPS)
    assert chunk.shape == (ROWS, STEPS) and "valid" in chunk.keys()
    assert not isinstance(model._sequence_source, RolloutSequences)  # π*'s rollouts carry "valid" too
    assert "recurrent_state_h" in model._pretraining_states(8).keys()
    assert isinstance(model._state_source, DatasetStates)
