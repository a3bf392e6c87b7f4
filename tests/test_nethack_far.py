"""The paper's FAR hand-overs on NetHack: Dlvl 4 and Sokoban start states, Sokoban's metric (pits
and holes filled, counted from NetHack's messages) and its way into evaluation and the CLI.

``tests/data/start_states_{dlvl4,sokoban}.json`` were recorded once by
``record_start_states(out, [4, "sokoban"], count=1, seed=0)`` at commit c06eb59 (its first two
games; the expert has improved since, and now reaches Sokoban in the first game, on the other
variant of the level, so the slow test checks the recorder's output rather than comparing files).
The Sokoban state replays 1687 keys to Sokoban's first level (Dlvl 5, the variant whose pits lie
west of a row of boulders), where ``FILL_KEYS`` push one boulder into a pit.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from nle import nethack
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

from lit_rl.cli import main as lit_rl_main
from lit_rl.envs.nethack import (
    SOKOBAN_DNUM,
    NetHackBatchEnv,
    StartState,
    count_pit_fills,
    load_start_states,
)
from lit_rl.evaluation import evaluate_episodes
from lit_rl.recording.nethack_games import parse_targets, record_start_states
from lit_rl.scenarios.nethack import NetHack

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
SOKOBAN_STATES = DATA / "start_states_sokoban.json"
DLVL4_STATES = DATA / "start_states_dlvl4.json"
KEY = {chr(int(a)): i for i, a in reversed(list(enumerate(nethack.ACTIONS))) if 32 <= int(a) < 127}
# From the hand-over: along the top row, push a boulder down and three east, walk down through the
# gap, push the gap's boulder into the lower room, one boulder down, then one west into a pit.
FILL_KEYS = "lljllllljjjjhjjh"


def step(env: NetHackBatchEnv, key: str) -> TensorDict:
    action = torch.tensor([KEY[key]] * env.num_games)
    return env.step(TensorDict(action=action, batch_size=env.batch_size))["next"]


# Every message NetHack 3.6 prints when a boulder fills a pit or plugs a hole (do.c flooreffects,
# hack.c moverock), and messages about boulders that fill nothing.
FILLS = [
    "The boulder fills a pit.",
    "The boulder plugs a hole.",
    "The boulder plugs a trap door.",
    "The boulder triggers and plugs a trap door.",
    "The boulder falls into and plugs a hole in the floor!",
    "The boulder triggers and plugs a trap door in the floor!",
    "You hear a boulder fall.",
    "You hear a CRASH! beneath you.",
    "Kerplunk!  You no longer feel the boulder.",
]
NOT_FILLS = [
    "The boulder falls into the pit.",  # a monster in it: "fills a pit" follows if it is filled
    "With great effort you move the boulder.",
    "You try to move the boulder, but in vain.",
    "Perhaps that's why you cannot move past it.",
    "There is a boulder here.",
    "You fall into a pit!",
    "There is a hole here.",
]


@pytest.mark.parametrize("message", FILLS)
def test_fill_messages_count_once(message):
    assert count_pit_fills(message) == 1
    assert count_pit_fills(f"{message}  You see here a dagger.") == 1


def test_other_messages_count_nothing_and_a_line_counts_each_fill():
    assert [count_pit_fills(m) for m in NOT_FILLS] == [0] * len(NOT_FILLS)
    assert count_pit_fills("The boulder fills a pit.  The boulder fills a pit.") == 2


def test_start_states_land_on_the_requested_level_and_branch():
    (dlvl4,) = load_start_states(DLVL4_STATES)
    (sokoban,) = load_start_states(SOKOBAN_STATES)
    env = NetHackBatchEnv(2, seed=0, start_states=[dlvl4, sokoban])  # seed 0: game i gets state i
    try:
        out = env.reset()
        assert out["dlvl"].tolist() == [dlvl4.dlvl, sokoban.dlvl] and dlvl4.dlvl >= 4
        assert out["dnum"][1].item() == SOKOBAN_DNUM == sokoban.dnum
        assert out["dnum"][0].item() == dlvl4.dnum != SOKOBAN_DNUM
        top_rows = bytes(out["tty_chars"][1, 1:22].flatten().tolist()).decode("latin-1")
        assert top_rows.count("^") >= 8  # Sokoban's first level: its row of pits
    finally:
        env.close()
    # A prefix that lands elsewhere fails loudly, naming the dungeon
    elsewhere = StartState(sokoban.core_seed, sokoban.disp_seed, sokoban.actions, sokoban.dlvl, dnum=0)
    wrong = NetHackBatchEnv(1, start_states=[elsewhere])
    try:
        with pytest.raises(RuntimeError, match="in dungeon 4, recorded Dlvl 5 in dungeon 0"):
            wrong.reset()
    finally:
        wrong.close()


def test_pits_filled_counted_in_a_real_sokoban_game():
    """The count rises by one on the push into the pit and nowhere else; the message still on
    screen while a count prefix is typed is not a second fill."""
    env = NetHackBatchEnv(1, start_states=load_start_states(SOKOBAN_STATES))
    try:
        assert env.reset()["episode_pits_filled"].item() == 0
        counts = [step(env, key)["episode_pits_filled"].item() for key in FILL_KEYS]
        assert counts == [0] * (len(FILL_KEYS) - 1) + [1]
        assert "fills a pit" in env._message[0].tobytes().decode("latin-1")
        assert step(env, "2")["episode_pits_filled"].item() == 1  # "Count: 2" keeps the line up
        assert "fills a pit" in env._message[0].tobytes().decode("latin-1")
        assert step(env, "s")["episode_pits_filled"].item() == 1
        assert env.reset()["episode_pits_filled"].item() == 0  # counted per episode
    finally:
        env.close()


class ScriptedKeys(torch.nn.Module):
    """Presses ``keys`` in order (then searches), whatever it sees: a policy for evaluate_episodes."""

    def __init__(self, keys: str):
        super().__init__()
        self.actions = [KEY[k] for k in keys]
        self.t = 0

    def forward(self, tty_chars: torch.Tensor) -> torch.Tensor:
        action = self.actions[self.t] if self.t < len(self.actions) else KEY["s"]
        self.t += 1
        return torch.full(tty_chars.shape[:1], action, dtype=torch.int64)


def test_evaluator_reports_pits_filled_from_the_env():
    scenario = NetHack(
        far_dlvl=4,
        far_levels=["sokoban"],
        start_states=str(DLVL4_STATES),
        start_state_files={"sokoban": str(SOKOBAN_STATES)},
        max_episode_steps=len(FILL_KEYS) + 4,
    )
    assert scenario.subspaces == ("close", "far", "sokoban")
    env = scenario.make_env(2, "sokoban", seed=0)
    policy = TensorDictModule(ScriptedKeys(FILL_KEYS), ["tty_chars"], ["action"])
    try:
        metrics = evaluate_episodes(env, policy, scenario.max_episode_steps)
    finally:
        env.close()
    assert metrics["pits_filled"] == 1.0 and metrics["max_dlvl"] == 5.0 and metrics["episodes"] == 2
    assert metrics["length_mean"] == scenario.max_episode_steps
    assert {"return_mean", "return_std", "turns"} <= set(metrics)


def test_sokoban_file_outside_sokoban_and_bad_levels_are_one_line(tmp_path):
    scenario = NetHack(far_levels=["sokoban"], start_state_files={"sokoban": str(DLVL4_STATES)})
    with pytest.raises(ValueError, match="outside Sokoban") as error:
        scenario.make_env(1, "sokoban", seed=0)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="far_levels entry 'mines'"):
        NetHack(far_levels=["mines"])
    with pytest.raises(ValueError, match="repeat"):
        NetHack(far_dlvl=4, far_levels=[4])
    with pytest.raises(ValueError, match="far depth 'x'"):
        parse_targets("4,x")
    assert parse_targets("4, 8,Sokoban") == [4, 8, "sokoban"]
    with pytest.raises(FileNotFoundError, match="make data ENV=nethack"):
        NetHack(data_dir=str(tmp_path), far_levels=[8]).make_env(1, "dlvl8", seed=0)


def test_visitation_counts_levels_and_ended_episodes():
    scenario = NetHack(far_dlvl=4, far_levels=["sokoban"])
    dlvl = torch.tensor([[1, 2, 3], [4, 5, 5]])
    batch = TensorDict(
        dlvl=dlvl,
        dnum=torch.tensor([[0, 0, 0], [0, SOKOBAN_DNUM, 0]]),
        next=TensorDict(
            episode_end=torch.tensor([[False, False, True], [False, False, True]]),
            episode_depth=torch.tensor([[1, 2, 3], [4, 5, 6]]),
            episode_turns=torch.tensor([[5, 6, 700], [8, 9, 1200]]),
            batch_size=[2, 3],
        ),
        batch_size=[2, 3],
    )
    visit = scenario.visitation(batch)
    assert visit["close"] == pytest.approx(1 / 6) and visit["far"] == pytest.approx(3 / 6)
    assert [visit[f"dlvl>={k}"] for k in (2, 3, 4, 5)] == pytest.approx([5 / 6, 4 / 6, 3 / 6, 2 / 6])
    assert visit["sokoban"] == pytest.approx(1 / 6)
    assert visit["episodes"] == 2 and visit["episodes_turns"] == 1900 and visit["episodes_max_dlvl"] == 9
    assert [visit[f"episodes_dlvl>={k}"] for k in (2, 3, 4, 5)] == [2, 2, 1, 1]


def test_short_fit_logs_sokoban_evaluation_and_level_visitation(tmp_path):
    """The real CLI: a from-scratch tiny run evaluates close, far (Dlvl 4) and sokoban and logs
    eval/sokoban/pits_filled beside the score gained, and train/visit/dlvl>=k."""
    run = tmp_path / "run"
    lit_rl_main([
        "fit",
        "--config", str(ROOT / "configs/base.yaml"),
        "--config", str(ROOT / "configs/env/nethack.yaml"),
        "--config", str(ROOT / "configs/trainer/cpu.yaml"),
        "--config", str(ROOT / "configs/logger/csv.yaml"),
        "--model.pretrained", "null",
        "--model.scenario.init_args.far_dlvl", "4",
        "--model.scenario.init_args.far_levels", "[sokoban]",
        "--model.scenario.init_args.start_states", str(DLVL4_STATES),
        "--model.scenario.init_args.start_state_files", json.dumps({"sokoban": str(SOKOBAN_STATES)}),
        "--model.scenario.init_args.max_episode_steps", "12",
        "--model.budget.frames", "64",
        "--model.collection.num_envs", "2",
        "--model.collection.rollout_length", "32",
        "--model.optimisation.minibatch_size", "32",
        "--model.evaluation.episodes", "2",
        "--run_dir", str(run),
    ])  # fmt: skip
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["eval"]) == {"close", "far", "sokoban"}
    assert {"return_mean", "pits_filled", "max_dlvl"} <= set(summary["eval"]["sokoban"])
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0])
    assert {"eval/sokoban/pits_filled", "eval/sokoban/return_mean", "eval/far/max_dlvl"} <= columns
    assert {"train/visit/dlvl>=4", "train/visit/episodes", "train/visit/sokoban"} <= columns
    sokoban = [float(r["eval/sokoban/max_dlvl"]) for r in rows if r.get("eval/sokoban/max_dlvl")]
    assert sokoban and all(d == 5.0 for d in sokoban)  # every Sokoban episode starts on Dlvl 5


@pytest.mark.slow
def test_recorder_reaches_dlvl4_and_sokoban(tmp_path):
    """The seeking expert's first game of seed 0 reaches Dlvl 4 and Sokoban; both states are
    written, replay-checked, and the report says how often (≈40 s on a loaded machine)."""
    found = record_start_states(tmp_path, [4, "sokoban"], count=1, seed=0, max_steps=20_000)
    assert found["sokoban"][0].dnum == SOKOBAN_DNUM and found[4][0].dlvl >= 4
    (sokoban,) = load_start_states(tmp_path / "start_states_sokoban.json")
    assert sokoban == found["sokoban"][0]
    (dlvl4,) = load_start_states(tmp_path / "start_states_dlvl4.json")
    assert dlvl4.actions == load_start_states(DLVL4_STATES)[0].actions  # the expert is deterministic
    report = json.loads((tmp_path / "start_states_report.json").read_text())
    assert report["games"] == 1 and report["states"] == {"4": 1, "sokoban": 1}
    assert np.isclose(report["reach_rate"]["sokoban"], 1.0) and report["oracle_seen"] == 1
