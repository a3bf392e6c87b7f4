"""NetHack Learning Dataset ingestion through `nle.dataset` (paper section 3, pre-training data).

Recordings in NLE's own layout (NLD-AA, which NLE recorded while AutoAscend played, or games
recorded here) or in the alt.org layout (NLD-NAO) are indexed in nle's sqlite database,
selected by character with SQL, and streamed as [B, T] sequence batches of terminal frames with the
action taken at each frame, for behavioural-cloning pre-training and BC replay. Nothing is loaded
into memory beyond the batch being filled. Indexing from the command line (NLD-AA for the paper
preset; `make nethack-pretrain` indexes the project's own recordings itself):

    python -m lit_rl.datasets.nld data/nld-aa --index data/nld-aa/index.db --name nld-aa
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import nle.dataset as nld
import numpy as np
import torch
from nle import nethack
from tensordict import TensorDict

log = logging.getLogger(__name__)

MISSING_DATA_FIX = "run `make data ENV=nethack`"
_BZ2_END_OF_STREAM = 0x177245385090  # 48-bit marker closing every complete bzip2 stream


def keypress_action_table() -> np.ndarray:
    """256-entry keypress -> action index table over `nle.nethack.ACTIONS`; unknown keys map to 0.

    Keys that appear twice in the action set ('"', '$', '+') map to their first index.
    """
    table = np.zeros(256, dtype=np.int64)
    assigned = np.zeros(256, dtype=bool)
    for index, action in enumerate(nethack.ACTIONS):
        code = int(action)
        if not assigned[code]:
            table[code], assigned[code] = index, True
    return table


KEYPRESS_TO_ACTION = keypress_action_table()


def episode_starts_from_timestamps(
    timestamps: np.ndarray,
    gap_seconds: float,
    previous: np.ndarray | None = None,
    ticks_per_second: float = 1e6,
) -> np.ndarray:
    """Mark frames that follow a pause longer than `gap_seconds` as episode starts.

    NLD-AA's `done` flags are broken, so episode ends are rebuilt from gaps between consecutive
    frame timestamps (microseconds in ttyrec v3). `timestamps` is [..., T]; `previous` ([...]) is
    the timestamp before each row's first frame, with 0 (or None) meaning "no frame before", which
    makes that first frame a start. Time running backwards (another recording) also starts one;
    zero timestamps are padding and never do.
    """
    timestamps = np.asarray(timestamps, dtype=np.int64)
    if previous is None:
        previous = np.zeros(timestamps.shape[:-1], dtype=np.int64)
    before = np.concatenate([np.asarray(previous, dtype=np.int64)[..., None], timestamps[..., :-1]], -1)
    step = timestamps - before
    return ((step > gap_seconds * ticks_per_second) | (step < 0) | (before == 0)) & (timestamps != 0)


def ttyrec_is_intact(path: str | os.PathLike) -> bool:
    """Cheap completeness check: bzip2 header at the start, end-of-stream marker at the end.

    A recording cut short (a crashed writer, a partial copy) lacks the bit-aligned end marker; the
    converter would silently read only part of it, so such files are caught here instead.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(3)
            f.seek(0, os.SEEK_END)
            if f.tell() < 14:
                return False
            f.seek(-11, os.SEEK_END)
            tail = int.from_bytes(f.read(11), "big")
    except OSError:
        return False
    if head != b"BZh":
        return False
    mask = (1 << 48) - 1
    return any((tail >> (32 + pad)) & mask == _BZ2_END_OF_STREAM for pad in range(8))


def _require(path: str | os.PathLike, what: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found at {path}: {MISSING_DATA_FIX}")


def build_index(
    data_dir: str | os.PathLike,
    dbfilename: str | os.PathLike,
    dataset_name: str = "nethack-expert",
    layout: str = "nle",
    refresh: bool = False,
) -> int:
    """Index a directory of recordings into the sqlite database; returns the dataset's game count.

    `layout="nle"` reads NLE's own recordings (DIR/<run>/nle.<pid>.<k>.ttyrec3.bz2 + xlogfile):
    NLD-AA (the paper's data, recorded by NLE) and `make data ENV=nethack`'s games;
    `layout="altorg"` reads NLD-NAO, the alt.org dumps (per-player folders, xlogfile.*,
    blacklist.txt).
    A database can hold several datasets; an already indexed name is left as it is unless
    `refresh`, which drops it and indexes the directory again (e.g. after recording more games).
    """
    _require(data_dir, "NetHack recordings")
    if layout not in ("nle", "altorg"):
        raise ValueError(f"layout must be 'nle' or 'altorg', not {layout!r}")
    if layout == "nle" and not any(Path(data_dir).glob("*/*.xlogfile")):
        raise FileNotFoundError(f"no recorded games (*/nle.*.xlogfile) in {data_dir}: {MISSING_DATA_FIX}")
    dbfilename = str(dbfilename)
    if not nld.db.exists(dbfilename):
        nld.db.create(dbfilename)
    with nld.db.db(filename=dbfilename, rw=True) as conn:
        known = conn.execute("SELECT 1 FROM roots WHERE dataset_name=?", (dataset_name,)).fetchone()
        if known and not refresh:
            return nld.db.count_games(dataset_name, conn=conn)
        if known:
            nld.db.delete_dataset(dataset_name, conn=conn, commit=False)
            nld.db.delete_games_with_select("SELECT gameid FROM datasets", not_in=True, conn=conn)
    add = nld.add_nledata_directory if layout == "nle" else nld.add_altorg_directory
    with contextlib.redirect_stdout(io.StringIO()) as chatter:  # nle reports progress with print
        add(str(data_dir), dataset_name, dbfilename)
    log.info(chatter.getvalue().strip())
    with nld.db.db(filename=dbfilename) as conn:
        return nld.db.count_games(dataset_name, conn=conn)


def _xlog_value(value: str | None) -> str | None:
    """'monk', 'Mon' and 'MON' all mean the xlogfile's 'Mon'."""
    return None if value is None else value[:3].capitalize()


def select_gameids(
    dbfilename: str | os.PathLike,
    dataset_name: str,
    role: str | None = None,
    race: str | None = None,
    align: str | None = None,
) -> list[int]:
    """Game ids of a dataset whose character matches (e.g. role='Mon', race='Hum', align='Neu')."""
    _require(dbfilename, "NetHack dataset index")
    sql = (
        "SELECT games.gameid FROM games JOIN datasets ON games.gameid = datasets.gameid "
        "WHERE datasets.dataset_name = ?"
    )
    args: list[str] = [dataset_name]
    for column, value in (("role", role), ("race", race), ("align", align)):
        if value is not None:
            sql += f" AND games.{column} = ?"
            args.append(_xlog_value(value))
    with nld.db.db(filename=str(dbfilename)) as conn:
        gameids = [row[0] for row in conn.execute(sql + " ORDER BY games.gameid", args)]
    if not gameids:
        raise ValueError(
            f"no games in dataset {dataset_name!r} of {dbfilename} with role={role} race={race} align={align}"
        )
    return gameids


def draw_games(gameids: list[int], count: int | None, seed: int) -> list[int]:
    """A seeded random subset of ``count`` games (all of them when ``count`` is None or larger),
    in game-id order: the paper drew its ≈8000 Human Monk games from NLD-AA at random."""
    if count is None or count >= len(gameids):
        return list(gameids)
    order = torch.randperm(len(gameids), generator=torch.Generator().manual_seed(seed))[:count]
    return sorted(gameids[i] for i in order.tolist())


class NLDSequences(torch.utils.data.IterableDataset):
    """Streams [B, T] TensorDicts of consecutive frames from indexed recordings.

    Keys: `tty_chars` (uint8 [B,T,24,80]), `tty_colors` (int8), `tty_cursor` (int16 [B,T,2]),
    `actions` (int64, the keypress mapped through `KEYPRESS_TO_ACTION`), `prev_actions` (the action
    before, 0 at an episode start), `episode_start` (bool: a new game, the dataset's own reset flag,
    or a timestamp gap > `gap_seconds`), `valid` (False on the zero padding at the end of a finite
    pass) and `gameids`. Each batch row plays its games back to back, so recurrent state may be
    carried from one batch to the next and reset where `episode_start` is set.

    Games are split across `rank`/`world_size` (DDP) and across DataLoader workers (see
    `dataloader`). Games with a truncated or deleted recording are skipped, counted in `skipped`
    and warned about once; a stream none of whose games is left on disk stops with one line.
    """

    def __init__(
        self,
        dbfilename: str | os.PathLike,
        dataset_name: str = "nethack-expert",
        batch_size: int = 128,
        seq_length: int = 32,
        gameids: list[int] | None = None,
        shuffle: bool = True,
        loop_forever: bool = False,
        gap_seconds: float = 60.0,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ):
        super().__init__()
        _require(dbfilename, "NetHack dataset index")
        self.dbfilename = str(dbfilename)
        self.dataset_name = dataset_name
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.gameids = list(gameids) if gameids is not None else select_gameids(dbfilename, dataset_name)
        self.shuffle = shuffle
        self.loop_forever = loop_forever
        self.gap_seconds = gap_seconds
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self._epoch = 0
        #: games skipped because their recordings are truncated or deleted: game id → why (each
        #: is warned about once, when first found)
        self.skipped: dict[int, str] = {}

    def _intact_games(self, gameids: list[int]) -> list[int]:
        """The given games whose every recording file is there and complete. The others are
        skipped and counted (``skipped``: game id → why), with one warning per stream for all of
        them; when none is left, the index no longer matches the folder and that is an error.

        Raises:
            FileNotFoundError: every game's recordings are gone (deleted or moved since indexing).
        """
        paths = self._recording_paths(set(gameids))
        intact, fresh = [], {}
        for gameid in gameids:
            files = paths.get(gameid, [])
            missing = [p for p in files if not os.path.exists(p)]
            broken = [p for p in files if p not in missing and not ttyrec_is_intact(p)]
            if not files or missing:
                fresh[gameid] = f"deleted: {(missing or ['(no recording listed)'])[0]}"
            elif broken:
                fresh[gameid] = f"truncated: {broken[0]}"
            else:
                intact.append(gameid)
        if gameids and not intact and all(why.startswith("deleted") for why in fresh.values()):
            raise FileNotFoundError(
                f"the {len(gameids)} games of dataset {self.dataset_name!r} in {self.dbfilename} have no "
                f"recordings on disk any more (deleted or moved; first: {next(iter(fresh.values()))[9:]}): "
                "re-index the folder (python -m lit_rl.datasets.nld <recordings> --index "
                f"{self.dbfilename} --name {self.dataset_name}) or {MISSING_DATA_FIX}"
            )
        new = {g: why for g, why in fresh.items() if g not in self.skipped}
        self.skipped.update(new)
        if new:
            warnings.warn(
                f"skipping {len(new)} of {len(gameids)} games of dataset {self.dataset_name!r} whose "
                f"recordings are damaged or gone ({'; '.join(list(new.values())[:3])}); the stream goes on "
                "with the others",
                stacklevel=3,
            )
        return intact

    def _recording_paths(self, wanted: set[int]) -> dict[int, list[str]]:
        """Game id → the paths of its recording files, as the index lists them."""
        paths: dict[int, list[str]] = {}
        with nld.db.db(filename=self.dbfilename) as conn:
            root = nld.db.get_root(self.dataset_name, conn=conn)
            rows = conn.execute(
                "SELECT ttyrecs.gameid, ttyrecs.path FROM ttyrecs "
                "JOIN datasets ON ttyrecs.gameid = datasets.gameid WHERE datasets.dataset_name = ?",
                (self.dataset_name,),
            )
            for gameid, path in rows:
                if gameid in wanted:
                    paths.setdefault(gameid, []).append(os.path.join(root, path))
        return paths

    def _shard(self) -> list[int]:
        gameids = sorted(self.gameids)
        if self.shuffle:
            np.random.default_rng([self.seed, self._epoch]).shuffle(gameids)
        shards, shard = self.world_size, self.rank
        worker = torch.utils.data.get_worker_info()
        if worker is not None:
            shards, shard = shards * worker.num_workers, shard * worker.num_workers + worker.id
        return gameids[shard::shards]

    def dataloader(self, num_workers: int = 0) -> torch.utils.data.DataLoader:
        """A loader over ready-made batches; each worker streams its own share of the games."""
        return torch.utils.data.DataLoader(self, batch_size=None, num_workers=num_workers, collate_fn=_as_is)

    def __iter__(self) -> Iterator[TensorDict]:
        gameids = self._intact_games(self._shard())
        self._epoch += 1
        if len(gameids) < self.batch_size and not self.loop_forever:
            raise ValueError(
                f"{len(gameids)} usable games in this shard cannot fill {self.batch_size} rows; "
                "lower batch_size or set loop_forever=True"
            )
        if not gameids:
            raise ValueError(f"no usable games in this shard of dataset {self.dataset_name!r}")
        # nle deals games to rows round-robin; with fewer games than rows, rows share games.
        gameids = [gameids[i % len(gameids)] for i in range(max(len(gameids), self.batch_size))]
        source = nld.TtyrecDataset(
            self.dataset_name,
            batch_size=self.batch_size,
            seq_length=self.seq_length,
            dbfilename=self.dbfilename,
            gameids=gameids,
            shuffle=False,  # shuffled above with our own seeded generator
            loop_forever=self.loop_forever,
        )
        rows = self.batch_size
        last_gameid = np.zeros(rows, dtype=np.int32)
        last_time = np.zeros(rows, dtype=np.int64)
        last_action = np.zeros(rows, dtype=np.int64)
        for mb in source:  # nle reuses these arrays: everything below copies
            gameid = mb["gameids"]
            valid = gameid != 0
            actions = KEYPRESS_TO_ACTION[mb["keypresses"]]
            new_game = gameid != np.concatenate([last_gameid[:, None], gameid[:, :-1]], 1)
            paused = episode_starts_from_timestamps(mb["timestamps"], self.gap_seconds, last_time)
            start = (new_game | paused | mb["done"].astype(bool)) & valid
            prev_actions = np.concatenate([last_action[:, None], actions[:, :-1]], 1)
            prev_actions[start] = 0
            last_gameid, last_time, last_action = (
                gameid[:, -1].copy(),
                mb["timestamps"][:, -1].copy(),
                actions[:, -1],
            )
            yield TensorDict(
                {
                    "tty_chars": torch.from_numpy(mb["tty_chars"].copy()),
                    "tty_colors": torch.from_numpy(mb["tty_colors"].copy()),
                    "tty_cursor": torch.from_numpy(mb["tty_cursor"].copy()),
                    "actions": torch.from_numpy(actions),
                    "prev_actions": torch.from_numpy(prev_actions),
                    "episode_start": torch.from_numpy(start),
                    "valid": torch.from_numpy(valid),
                    "gameids": torch.from_numpy(gameid.copy()),
                },
                batch_size=[rows, self.seq_length],
            )


def _as_is(batch: TensorDict) -> TensorDict:
    """Collate nothing: the default would iterate a TensorDict's rows as if they were keys."""
    return batch


def policy_chunks(stream: Iterator[TensorDict]) -> Iterator[TensorDict]:
    """``NLDSequences`` batches renamed to the keys the NetHack policy and the collector use
    (``action``, ``prev_action``, ``is_init``), for BC replay and EWC inside fine-tuning."""
    renames = {"actions": "action", "prev_actions": "prev_action", "episode_start": "is_init"}
    for chunk in stream:
        chunk = chunk.exclude("gameids")
        for old, new in renames.items():
            chunk.rename_key_(old, new)
        yield chunk


def main(argv: list[str] | None = None) -> None:
    """Index a folder of recordings (the index BC pre-training, BC replay and EWC read)."""
    parser = argparse.ArgumentParser(prog="python -m lit_rl.datasets.nld", description=main.__doc__)
    parser.add_argument("data_dir", help="recordings: NLD-AA or `make data` (nle layout), NLD-NAO (altorg)")
    parser.add_argument("--index", required=True, help="sqlite index to write (scenario dataset_index)")
    parser.add_argument("--name", default="nethack-expert", help="dataset name (scenario dataset_name)")
    parser.add_argument("--layout", choices=("nle", "altorg"), default="nle")
    args = parser.parse_args(argv)
    try:
        games = build_index(args.data_dir, args.index, args.name, layout=args.layout)
    except (ValueError, FileNotFoundError) as error:
        print(f"nld: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"indexed {games} games of {args.name!r} in {args.index}")


if __name__ == "__main__":
    main()
