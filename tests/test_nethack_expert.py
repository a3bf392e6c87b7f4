"""The scripted NetHack expert: it plays, answers prompts, and its start states replay exactly."""

import re
from pathlib import Path

import numpy as np
import pytest
from nle import nethack

from lit_rl.experts import nethack_expert as ne


def test_expert_plays_a_seeded_game():
    env, expert = ne.make_env(), ne.NetHackExpert(seed=1)
    env.seed(1, 2, False)
    obs, _ = env.reset()
    for _ in range(400):
        action = expert.act(obs)
        assert 0 <= action < len(nethack.ACTIONS)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    else:
        assert obs["blstats"][nethack.NLE_BL_TIME] > 100  # time passes: it is not stuck in menus
    env.close()


def _prompt(message: str) -> dict:
    obs = {"message": np.zeros(256, np.uint8), "misc": np.array([1, 0, 0])}
    obs["message"][: len(message)] = np.frombuffer(message.encode(), np.uint8)
    return obs


def test_prompts_are_answered():
    expert = ne.NetHackExpert()
    assert expert.act(_prompt("Are you sure you want to pray? [yn] (n) ")) == ne.key("y")
    assert expert.act(_prompt("Really attack the watchman? [yn] (n) ")) == ne.ESC
    assert expert.act(_prompt("Do you want your possessions identified? [ynq] ")) == ne.ESC
    expert._expect, expert._answer = "want to eat", ne.key("f")
    assert expert.act(_prompt("What do you want to eat? [fg or ?*] ")) == ne.key("f")


def test_start_state_replays_deterministically():
    """The recorded prefix holds the gym env's own keys too, so the batch env replays it exactly."""
    found = ne.play_to_depths(7, 8, [2], max_steps=3000)
    if 2 not in found:
        pytest.skip("the expert did not reach Dlvl 2 within the step cap on this seed")
    state, blstats = found[2]
    assert state.dlvl >= 2 and (state.core_seed, state.disp_seed) == (7, 8)
    assert ne.play_until_depth(7, 8, 2, max_steps=3000) == state  # the expert is deterministic
    assert ne.key(" ") in state.actions  # at least one --More-- the gym env dismissed by itself
    for _ in range(2):
        assert np.array_equal(ne.replay(state), blstats)


def test_sokoban_seeker_turns_back_from_the_mines_and_the_main_up_stairs():
    """Seeking Sokoban: leave the Gnomish Mines at once and never take their stairs again; an up
    staircase that led up the main dungeon is walked back down and remembered as the main one."""
    seeker = ne.NetHackExpert(seek_sokoban=True)
    seeker._level_now, seeker._depth_now = (ne.DOOM_DNUM, 3), 3
    mines_top = ne._Level()
    assert seeker._arrive(mines_top, (ne.MINES_DNUM, 1), 4, 100, (ne.DOWN, True)) == ne.UP
    parent = ne._Level()
    assert seeker._arrive(parent, (ne.DOOM_DNUM, 3), 3, 200, (ne.UP, True)) is None
    assert parent.avoid_stairs == {200}
    seeker._level_now, seeker._depth_now = (ne.DOOM_DNUM, 7), 7
    assert seeker._arrive(ne._Level(), (ne.DOOM_DNUM, 6), 6, 300, (ne.UP, True)) == ne.DOWN
    entrance = ne._Level()
    assert seeker._arrive(entrance, (ne.DOOM_DNUM, 7), 7, 400, (ne.DOWN, True)) is None
    assert entrance.main_up == {400}  # its other up staircase is Sokoban's
    assert seeker._arrive(ne._Level(), (ne.SOKOBAN_DNUM, 4), 6, 500, (ne.UP, True)) is None
    assert seeker._reached_sokoban
    # A plain stair-diver goes where the stairs lead
    diver = ne.NetHackExpert()
    diver._level_now, diver._depth_now = (ne.DOOM_DNUM, 3), 3
    assert diver._arrive(ne._Level(), (ne.MINES_DNUM, 1), 4, 100, (ne.DOWN, True)) is None


def test_sokoban_entrance_depths_follow_dungeon_def():
    """dungeon.def: the Oracle at (5, 5) -> Dlvl 5-9; Sokoban's branch one level below her, up."""
    text = (Path(nethack.__file__).parents[1] / "nethackdir" / "dat" / "dungeon.def").read_text()
    assert re.search(r'LEVEL:\s+"oracle" "O" @ \(5, 5\)', text)
    assert re.search(r'CHAINBRANCH:\s+"Sokoban" "oracle" \+ \(1, 0\) up', text)
    assert list(ne.SOKOBAN_ENTRANCE_DEPTHS) == list(range(5 + 1, 5 + 5 + 1))
    dungeons = re.findall(r'^DUNGEON:\s+"([^"]+)"', text, flags=re.M)
    assert (
        dungeons.index("Sokoban") == ne.SOKOBAN_DNUM and dungeons.index("The Gnomish Mines") == ne.MINES_DNUM
    )
    blstats = np.zeros(nethack.NLE_BLSTATS_SIZE, np.int64)
    blstats[nethack.NLE_BL_DEPTH], blstats[nethack.NLE_BL_DNUM] = 5, ne.SOKOBAN_DNUM
    assert ne.target_reached("sokoban", blstats) and ne.target_reached(4, blstats)
    assert not ne.target_reached(6, blstats)
