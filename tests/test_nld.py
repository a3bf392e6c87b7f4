"""NLD ingestion on recordings the expert makes: index, SQL selection, streaming, corruption."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from nle import nethack

from lit_rl.datasets import nld
from lit_rl.experts.nethack_expert import NetHackExpert, make_env
from lit_rl.recording.nethack_games import record_games

# Keys NLE presses itself: --More-- (space), declined prompts (ESC), quitting at the cap (M-q y).
ENV_KEYS = {int(nld.KEYPRESS_TO_ACTION[k]) for k in (ord(" "), 27, int(nethack.Command.QUIT), ord("y"))}


@pytest.fixture(scope="session")
def recordings(tmp_path_factory):
    """Two short expert games recorded in NLE's layout, and their index."""
    out = tmp_path_factory.mktemp("nld") / "recordings"
    summary = record_games(out, games=2, seed=3, max_steps=300)
    db = out.parent / "index.db"
    assert nld.build_index(out, db, "expert") == 2
    return out, db, summary


def expert_actions(game: dict) -> list[int]:
    """The expert's actions in a recorded game, recomputed by replaying the expert on its seeds."""
    env, expert = make_env(), NetHackExpert(seed=game["core_seed"])
    env.seed(game["core_seed"], game["disp_seed"], False)
    obs, _ = env.reset()
    actions = []
    for _ in range(game["steps"]):
        actions.append(expert.act(obs))
        obs, _, terminated, truncated, _ = env.step(actions[-1])
        if terminated or truncated:
            break
    env.close()
    return actions


def test_keypress_table_round_trips_every_action():
    table = nld.KEYPRESS_TO_ACTION
    assert table.shape == (256,)
    for action in nethack.ACTIONS:
        assert nethack.ACTIONS[table[int(action)]] == action
    assert table[ord("k")] == 0 and table[ord("s")] == nethack.ACTIONS.index(nethack.Command.SEARCH)
    assert table[ord("+")] == nethack.ACTIONS.index(nethack.Command.SEESPELLS)  # first of two
    assert table[0x7F] == 0 and table[0xFF] == 0  # keys outside the action set


def test_episode_starts_from_timestamp_gaps():
    s = 1_000_000
    ts = np.array([[10 * s, 11 * s, 200 * s, 201 * s, 0, 0], [5 * s, 6 * s, 7 * s, 8 * s, 9 * s, 99 * s]])
    starts = nld.episode_starts_from_timestamps(ts, gap_seconds=30)
    assert starts.tolist() == [
        [True, False, True, False, False, False],
        [True, False, False, False, False, True],
    ]
    carried = nld.episode_starts_from_timestamps(ts, 30, previous=np.array([9 * s, 4 * s]))
    assert carried[:, 0].tolist() == [False, False]
    replayed = nld.episode_starts_from_timestamps(ts, 30, previous=np.array([50 * s, 4 * s]))
    assert replayed[:, 0].tolist() == [True, False]  # time ran backwards: another recording


def test_index_and_sql_selection(recordings, tmp_path):
    out, db, _ = recordings
    ids = nld.select_gameids(db, "expert", role="Monk", race="hum", align="Neu")
    assert len(ids) == 2
    assert nld.select_gameids(db, "expert") == ids
    with pytest.raises(ValueError, match="no games"):
        nld.select_gameids(db, "expert", role="Valkyrie")
    assert nld.build_index(out, db, "expert") == 2  # already indexed: left as it is
    copy = tmp_path / "index.db"
    shutil.copy(db, copy)
    assert nld.build_index(out, copy, "expert", refresh=True) == 2
    assert nld.build_index(out, copy, "second") == 2  # one database, several datasets
    with pytest.raises(FileNotFoundError, match="make data ENV=nethack"):
        nld.build_index(tmp_path / "missing", copy, "x")
    with pytest.raises(FileNotFoundError, match="make data ENV=nethack"):
        nld.NLDSequences(tmp_path / "missing.db")


def test_stream_shapes_and_actions_match_the_expert(recordings):
    out, db, summary = recordings
    stream = nld.NLDSequences(db, "expert", batch_size=2, seq_length=32, shuffle=False)
    batches = list(stream)
    first = batches[0]
    assert first.batch_size == (2, 32)
    assert first["tty_chars"].shape == (2, 32, 24, 80)
    assert first["tty_colors"].shape == (2, 32, 24, 80)
    assert first["tty_cursor"].shape == (2, 32, 2)
    actions = np.concatenate([b["actions"].numpy() for b in batches], 1)
    prev = np.concatenate([b["prev_actions"].numpy() for b in batches], 1)
    starts = np.concatenate([b["episode_start"].numpy() for b in batches], 1)
    valid = np.concatenate([b["valid"].numpy() for b in batches], 1)
    assert starts[:, 0].all() and starts.sum() == 2  # one game per row here
    assert (prev[:, 1:] == actions[:, :-1])[valid[:, 1:]].all() and (prev[:, 0] == 0).all()

    for row, game in enumerate(summary["games"]):  # shuffle=False: row i plays game i
        recorded = actions[row][valid[row]].tolist()
        expected = expert_actions(game)
        extra, i = [], 0
        for action in recorded:  # the expert's actions, in order, among the env's own keys
            if i < len(expected) and action == expected[i]:
                i += 1
            else:
                extra.append(action)
        assert i == len(expected)
        assert set(extra) <= ENV_KEYS
        assert len(extra) < 0.2 * len(recorded)


def test_shards_split_games(recordings):
    _, db, _ = recordings
    shards = [
        nld.NLDSequences(db, "expert", batch_size=1, seq_length=64, rank=r, world_size=2) for r in (0, 1)
    ]
    seen = [{int(g) for b in s for g in b["gameids"][b["valid"]].unique()} for s in shards]
    assert len(seen[0]) == len(seen[1]) == 1 and not seen[0] & seen[1]

    def frames_per_game(batches):
        counts = {}
        for batch in batches:
            for gameid in batch["gameids"][batch["valid"]].tolist():
                counts[gameid] = counts.get(gameid, 0) + 1
        return counts

    in_workers = nld.NLDSequences(db, "expert", batch_size=1, seq_length=64).dataloader(2)
    in_process = nld.NLDSequences(db, "expert", batch_size=2, seq_length=64)
    assert frames_per_game(in_workers) == frames_per_game(in_process)


def test_truncated_recording_is_skipped_with_a_warning(recordings, tmp_path):
    out, _, _ = recordings
    broken = tmp_path / "recordings"
    shutil.copytree(out, broken)
    games = json.loads(next(broken.glob("*/games.json")).read_text())["games"]
    victim = sorted(broken.glob("*/*.ttyrec3.bz2"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    assert not nld.ttyrec_is_intact(victim)
    db = tmp_path / "index.db"
    nld.build_index(broken, db, "expert")
    stream = nld.NLDSequences(db, "expert", batch_size=1, seq_length=64, shuffle=False)
    with pytest.warns(UserWarning, match=victim.name):
        frames = sum(int(b["valid"].sum()) for b in stream)
    assert frames >= games[1]["steps"]  # the intact game streams in full
    assert Path(victim).exists()


def test_draw_games_is_a_seeded_subset_in_game_order():
    """The paper's random draw of games: the same seed gives the same games, another seed others,
    and asking for more games than there are keeps them all."""
    games = list(range(100, 200))
    first = nld.draw_games(games, 10, seed=0)
    assert first == nld.draw_games(games, 10, seed=0) == sorted(first) and len(set(first)) == 10
    assert set(first) <= set(games) and first != nld.draw_games(games, 10, seed=1)
    assert nld.draw_games(games, None, seed=0) == games == nld.draw_games(games, 500, seed=0)


def test_bc_pretraining_and_replay_read_the_same_selection(recordings):
    """One selection (the scenario's character filter and seeded draw) feeds BC pre-training and
    BC/EWC replay: both stream exactly ``dataset_gameids``."""
    from lit_rl.scenarios.nethack import NetHack

    recordings, db, _ = recordings
    scenario = NetHack(
        data_dir=str(recordings), dataset_index=str(db), dataset_name="expert", dataset_games=1
    )
    (chosen,) = scenario.dataset_gameids()
    chunk = next(iter(nld.NLDSequences(db, "expert", batch_size=1, seq_length=8, gameids=[chosen])))
    replay = next(scenario.pretraining_sequences(1, 8, seed=0))
    assert torch.equal(replay["tty_chars"], chunk["tty_chars"])
    wizards = NetHack(data_dir=str(recordings), dataset_index=str(db), dataset_name="expert", role="wiz")
    with pytest.raises(ValueError, match="no games"):
        wizards.dataset_gameids()
