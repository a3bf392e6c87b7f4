"""Issue 27, point 5 (recorded data): a truncated recording in the middle of a BC replay stream is
skipped, counted and warned about once while the stream goes on; an index whose games were deleted
is skipped game by game, and stops in one line when nothing of it is left."""

from __future__ import annotations

import shutil
import warnings

import pytest

from lit_rl.datasets import nld
from lit_rl.recording.nethack_games import record_games
from lit_rl.training.pretraining_data import Prefetched


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Three short expert games in NLE's layout (≈1 s to record)."""
    out = tmp_path_factory.mktemp("games") / "recordings"
    record_games(out, games=3, seed=3, max_steps=300)
    return out


def indexed_copy(recorded, tmp_path):
    """A copy of the recordings, its index, and the files in game order."""
    folder = tmp_path / "recordings"
    shutil.copytree(recorded, folder)
    db = tmp_path / "index.db"
    assert nld.build_index(folder, db, "expert") == 3
    stream = nld.NLDSequences(db, "expert", batch_size=1, seq_length=64, shuffle=False)
    files = stream._recording_paths(set(stream.gameids))
    return db, stream.gameids, [files[g][0] for g in stream.gameids]


def frames_by_game(stream) -> dict[int, int]:
    """Valid frames streamed per game (game id 0 is nle's padding)."""
    counts: dict[int, int] = {}
    for batch in stream:
        for gameid, valid in zip(
            batch["gameids"].flatten().tolist(), batch["valid"].flatten().tolist(), strict=True
        ):
            counts[gameid] = counts.get(gameid, 0) + int(valid)
    counts.pop(0, None)
    return counts


def test_a_truncated_recording_in_the_middle_of_a_stream_is_skipped_counted_and_warned_once(
    recorded, tmp_path
):
    db, gameids, files = indexed_copy(recorded, tmp_path)
    expected = frames_by_game(nld.NLDSequences(db, "expert", batch_size=1, seq_length=64, shuffle=False))
    middle = gameids[1]
    with open(files[1], "r+b") as f:  # cut short, as a copy interrupted half-way
        f.truncate(f.seek(0, 2) // 2)

    stream = nld.NLDSequences(db, "expert", batch_size=1, seq_length=64, shuffle=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = frames_by_game(stream), frames_by_game(stream)  # two passes over the data
    skips = [w for w in caught if "skipping" in str(w.message)]
    assert (
        len(skips) == 1
        and "skipping 1 of 3 games" in str(skips[0].message)
        and files[1] in str(skips[0].message)
    )
    assert list(stream.skipped) == [middle] and stream.skipped[middle].startswith("truncated")
    assert first == second == {g: n for g, n in expected.items() if g != middle}


def test_bc_replay_goes_on_past_a_truncated_recording(recorded, tmp_path):
    """The stream BC replay reads inside fine-tuning (read ahead in a thread, looping for ever)."""
    db, gameids, files = indexed_copy(recorded, tmp_path)
    with open(files[1], "r+b") as f:
        f.truncate(f.seek(0, 2) // 2)
    stream = nld.NLDSequences(db, "expert", batch_size=2, seq_length=32, loop_forever=True, shuffle=False)
    replay = Prefetched(nld.policy_chunks(iter(stream)))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            chunks = [next(replay) for _ in range(60)]  # more than the 2 intact games hold: it loops
    finally:
        replay.close()
    assert len([w for w in caught if "skipping" in str(w.message)]) == 1
    assert all(chunk["action"].shape == (2, 32) for chunk in chunks)
    assert list(stream.skipped) == [gameids[1]]


def test_deleted_games_are_skipped_and_an_index_with_none_left_stops_in_one_line(recorded, tmp_path):
    db, gameids, files = indexed_copy(recorded, tmp_path)
    files_of_first = [p for p in (tmp_path / "recordings").rglob("*.ttyrec3.bz2") if str(p) == files[0]]
    files_of_first[0].unlink()
    stream = nld.NLDSequences(db, "expert", batch_size=1, seq_length=64, shuffle=False)
    with pytest.warns(UserWarning, match="skipping 1 of 3 games"):
        streamed = frames_by_game(stream)
    assert set(streamed) == set(gameids[1:]) and stream.skipped[gameids[0]].startswith("deleted")

    shutil.rmtree(tmp_path / "recordings")
    with pytest.raises(FileNotFoundError) as error:
        next(iter(nld.NLDSequences(db, "expert", batch_size=1, seq_length=64)))
    message = str(error.value)
    assert (
        "\n" not in message and str(db) in message and "deleted or moved" in message and "re-index" in message
    )
